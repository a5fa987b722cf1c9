"""The model registry for operators: upload weights, read metrics and the model card, activate, roll back."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from detection import services
from detection.forms import ModelVersionUploadForm
from detection.model_card import render_card, round_metric, strip_paths
from detection.models import Classification, Clip, ModelVersion
from gunwatch.exceptions import ApplicationError

HEADLINE_METRICS = ("recall", "precision", "fpr", "auc", "false_alarms_per_hour")


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "status",
        "architecture",
        "threshold_rounded",
        "short_sha256",
        "headline_metrics",
        "created_at",
        "activated_at",
    ]
    list_filter = ["status", "architecture"]
    search_fields = ["name", "version", "sha256"]
    actions = ["activate_version", "roll_back"]
    readonly_fields = [
        "name",
        "version",
        "status",
        "architecture",
        "weights_file_name",
        "sha256",
        "sample_rate",
        "feature_params_pretty",
        "threshold_rounded",
        "metrics_pretty",
        "model_card_rendered",
        "previous_active",
        "created_by",
        "created_at",
        "activated_at",
    ]
    change_fields = [
        "name",
        "version",
        "status",
        "architecture",
        "weights_file_name",
        "sha256",
        "sample_rate",
        "threshold_rounded",
        "feature_params_pretty",
        "metrics_pretty",
        "model_card_rendered",
        "notes",
        "previous_active",
        "created_by",
        "created_at",
        "activated_at",
    ]
    add_fields = ["weights_file", "name", "version", "metrics", "model_card", "notes", "activate"]

    def get_fields(self, request: HttpRequest, obj: ModelVersion | None = None) -> list[str]:  # type: ignore[override]  # flat names: one of the shapes Django takes
        return self.change_fields if obj is not None else self.add_fields

    def get_readonly_fields(self, request: HttpRequest, obj: ModelVersion | None = None) -> list[str]:
        return self.readonly_fields if obj is not None else []

    def get_form(
        self, request: HttpRequest, obj: ModelVersion | None = None, change: bool = False, **kwargs: Any
    ) -> type[ModelForm]:
        if obj is None:
            kwargs["form"] = ModelVersionUploadForm
        return super().get_form(request, obj, change=change, **kwargs)

    def save_form(self, request: HttpRequest, form: Any, change: bool) -> Any:
        if change:
            return super().save_form(request, form, change)
        data = form.cleaned_data
        return services.model_version_register(
            name=data["name"],
            version=data["version"],
            file=data["weights_file"],
            metrics=data.get("metrics"),
            model_card=data.get("model_card") or "",
            activate=data.get("activate", False),
            created_by=request.user,  # type: ignore[arg-type]  # the admin is staff only: never anonymous
        )

    def save_model(self, request: HttpRequest, obj: ModelVersion, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
        elif form.cleaned_data.get("notes"):
            # The service does not know the operator's free-text notes; they are stored alongside.
            ModelVersion.objects.filter(pk=obj.pk).update(notes=form.cleaned_data["notes"])

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        if change:
            super().save_related(request, form, formsets, change)

    def has_delete_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        if obj is not None and obj.status == ModelVersion.Status.ACTIVE:
            return False  # activate another version first; the fleet must never be left without one
        return super().has_delete_permission(request, obj)

    @admin.display(description="sha256")
    def short_sha256(self, obj: ModelVersion) -> str:
        return obj.sha256[:12]

    @admin.display(description="metrics")
    def headline_metrics(self, obj: ModelVersion) -> str:
        shown = [
            f"{key}={round_metric(obj.metrics[key])}"
            for key in HEADLINE_METRICS
            if isinstance(obj.metrics.get(key), int | float)
        ]
        return ", ".join(shown) or "—"

    @admin.display(description="metrics")
    def metrics_pretty(self, obj: ModelVersion) -> str:
        scalars = {k: v for k, v in sorted(obj.metrics.items()) if not isinstance(v, dict | list)}
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td></tr>",
            ((k.replace("_", " "), strip_paths(round_metric(v))) for k, v in scalars.items()),
        )
        return format_html('<table class="gw-metrics">{}</table>', rows) if scalars else "—"

    @admin.display(description="model card")
    def model_card_rendered(self, obj: ModelVersion) -> str:
        return render_card(obj.model_card) if obj.model_card else "—"

    @admin.display(description="weights")
    def weights_file_name(self, obj: ModelVersion) -> str:
        return obj.weights.name.rsplit("/", 1)[-1] if obj.weights.name else "—"

    @admin.display(description="threshold")
    def threshold_rounded(self, obj: ModelVersion) -> str:
        return round_metric(obj.threshold)

    @admin.display(description="feature parameters")
    def feature_params_pretty(self, obj: ModelVersion) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.feature_params, indent=2, sort_keys=True))

    @admin.action(description="Activate the selected version (retires the active one)")
    def activate_version(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", level=messages.ERROR)
            return
        try:
            activated = services.model_version_activate(model_version=queryset.get())
        except ApplicationError as exc:
            self.message_user(request, exc.message, level=messages.ERROR)
            return
        self.message_user(request, f"{activated} is now the active model.", level=messages.SUCCESS)

    @admin.action(description="Roll back: re-activate the version that was active before the selected one")
    def roll_back(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        if queryset.count() != 1 or queryset.get().status != ModelVersion.Status.ACTIVE:
            self.message_user(request, "Select the active version to roll it back.", level=messages.ERROR)
            return
        try:
            restored = services.model_version_rollback()
        except ApplicationError as exc:
            self.message_user(request, exc.message, level=messages.ERROR)
            return
        self.message_user(request, f"Rolled back: {restored} is the active model again.", level=messages.SUCCESS)


class ClassificationInline(admin.StackedInline):
    model = Classification
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "label",
        "score",
        "threshold",
        "model_version",
        "shots",
        "offset_s",
        "timings_ms",
        "created_at",
    )


@admin.register(Clip)
class ClipAdmin(admin.ModelAdmin):
    list_display = [
        "code",
        "device",
        "status",
        "result",
        "recorded_at",
        "received_at",
        "duration_s",
        "retain_until",
        "audio_deleted_at",
    ]
    list_filter = ["status", "classification__label", "audio_format"]
    search_fields = ["code", "client_id", "device__name", "device__code", "audio_sha256"]
    list_select_related = ["device", "classification"]
    raw_id_fields = ["device"]
    readonly_fields = [field.name for field in Clip._meta.fields]
    inlines = [ClassificationInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # clips come from devices only

    @admin.display(description="result")
    def result(self, obj: Clip) -> str:
        try:
            classification = obj.classification
        except Classification.DoesNotExist:
            return "—"
        return f"{classification.label} {classification.score:.2f}"
