from __future__ import annotations

from typing import Any

from django import forms

from detection import services
from detection.models import ModelVersion
from gunwatch.exceptions import ApplicationError


class ModelVersionUploadForm(forms.ModelForm):
    """Register a weights file: its checksum, architecture, features and threshold are read from it."""

    weights_file = forms.FileField(
        label="Weights file",
        help_text="A .pt file written by core.weights.save_weights (e.g. by the train_model command).",
    )
    activate = forms.BooleanField(
        required=False, help_text="Make this the active model at once (the current one is retired)."
    )

    class Meta:
        model = ModelVersion
        fields = ["name", "version", "metrics", "model_card", "notes"]
        help_texts = {
            "metrics": "Evaluation figures as JSON; left empty, the metrics stored in the weights file are used.",
            "model_card": "Left empty, the model card stored in the weights file is used.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.weights_info: services.WeightsInfo | None = None
        self.fields["metrics"].required = False

    def clean_weights_file(self) -> Any:
        upload = self.cleaned_data["weights_file"]
        try:
            self.weights_info = services.model_weights_inspect_file(upload)
        except ApplicationError as exc:
            raise forms.ValidationError(exc.message, code=exc.code) from exc
        return upload

    def clean_metrics(self) -> Any:
        metrics = self.cleaned_data.get("metrics")
        if metrics in (None, "", {}):
            return None
        if not isinstance(metrics, dict):
            raise forms.ValidationError("Metrics must be a JSON object.")
        return metrics
