"""The Django-free core of GunWatch: audio, features, networks, the classifier, evaluation, training, geometry.

Layering: ``core`` imports no app (gunwatch, devices, detection, alerts, accounts) and no Django, DRF,
Channels or Celery (tests/core/test_layering.py fails otherwise); the apps build on it, and the device
agent uses ``core.audio`` and ``core.features`` alone. Importing ``core`` imports nothing: torch is
loaded only by the modules that need it (networks, weights, classifier, evaluation, benchmark, training).
"""
