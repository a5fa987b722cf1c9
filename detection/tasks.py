"""Celery tasks of the detection app: thin, they fetch by id and call a service."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_init, worker_process_init

logger = logging.getLogger(__name__)

# Waiting for a model (none registered yet, or the active one refused) is retried for an hour.
NO_MODEL_RETRY_S = 60
NO_MODEL_MAX_RETRIES = 60


# A batch of 30 s clips classifies in a few seconds; minutes mean a hung decoder, which must not hold
# the audio queue. The soft limit raises inside the task, so the clips are released or failed as usual.
# ignore_result: the outcome lives on the clip row; with the Redis result backend, a task whose result
# is kept makes every enqueue subscribe to its result channel, which cost the upload request ~10 ms.
@shared_task(
    name="detection.tasks.classify_clip",
    bind=True,
    acks_late=True,
    max_retries=5,
    soft_time_limit=120,
    time_limit=180,
    ignore_result=True,
)
def classify_clip(self: Any, clip_id: int) -> str | None:
    """Classify a clip (routed to the ``audio`` queue) and whatever else is queued with it, in one batch.

    Safe to run twice: the claim decides. A message whose clip another batch already took costs one
    query. Returns the label of ``clip_id`` when this call classified it.
    """
    from detection.services import ClipRetryLater, clips_classify_batch

    try:
        classifications = clips_classify_batch(clip_id=clip_id)
    except ClipRetryLater as exc:
        if self.request.is_eager:
            # An eager retry would spin in place; the clip stays queued for the requeue sweep.
            logger.warning("Clip %s left queued: %s", clip_id, exc)
            return None
        raise self.retry(exc=exc, countdown=NO_MODEL_RETRY_S, max_retries=NO_MODEL_MAX_RETRIES) from exc
    except Exception as exc:
        # The service put the clips back in the queue (or failed them for good after too many attempts).
        if self.request.is_eager:
            raise
        raise self.retry(exc=exc, countdown=10 * 2**self.request.retries) from exc
    return next((c.label for c in classifications if c.clip_id == clip_id), None)


@shared_task(name="detection.tasks.purge_expired_audio", ignore_result=True)
def purge_expired_audio() -> int:
    """Periodic (beat): delete evidence audio past its retention date."""
    from detection.services import clips_purge_expired_audio

    return clips_purge_expired_audio()


@shared_task(name="detection.tasks.requeue_stuck_clips", ignore_result=True)
def requeue_stuck_clips() -> int:
    """Periodic (beat): re-enqueue clips whose classification task was lost or whose worker died."""
    from detection.services import clips_requeue_stuck

    return clips_requeue_stuck()


@shared_task(name="detection.tasks.record_pending_incidents", ignore_result=True)
def record_pending_incidents() -> int:
    """Periodic (beat): the incident outbox; finish positive verdicts whose worker died before their incident."""
    from detection.services import classifications_record_pending

    return classifications_record_pending()


# Set in a worker's parent before its pool forks, so the pool processes inherit it: does this worker
# consume the audio queue? The default-queue worker (notifications, sweeps) never classifies, and warming
# the model there cost its start ~1.5 s and each of its pool processes the model's memory.
_worker = {"classifies": True}


@worker_process_init.connect
def _load_model_at_start(**_: Any) -> None:
    """Warm the active model when a pool process starts, so its first clip is not the slow one.

    The parent loaded it before the fork (below), so this is a forward pass touching the inherited pages;
    it loads the model only when the parent had none (activated meanwhile, or no prefork pool).
    """
    from detection import inference

    if _worker["classifies"]:
        inference.warm_up()


@worker_init.connect
def _warm_before_fork(sender: Any = None, **_: Any) -> None:
    import gc

    from django.db import connection

    from detection import inference

    # consume_from is every queue when the worker was started without -Q.
    _worker["classifies"] = sender is None or "audio" in sender.app.amqp.queues.consume_from
    if _worker["classifies"]:
        inference.warm_features()
        # Loaded (its graph built if not kept) and warmed here, once, the model reaches every pool process
        # through the fork: each child loading and warming its own copy after "ready" held a cold worker's
        # first clip 1.5-2 s on two cores, and a replaced child paid it again. Torch runs on one thread
        # here (INFERENCE_TORCH_THREADS), so no OpenMP team exists for the fork to break.
        inference.warm_up()
    connection.close()  # the pool's children open their own
    # Everything imported so far (Django, torch, scipy, librosa) lives as long as the worker. Frozen, the
    # collector no longer walks it: Celery's gc.collect() before forking each pool process took ~0.2 s
    # apiece (on the worker's start, and again whenever a child is replaced), and the children's own
    # collections stop writing to pages they share with the parent (Python's gc.freeze() docs).
    gc.freeze()
