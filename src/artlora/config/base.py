"""What every stage config shares: the base class, its errors and the keys shared across stages."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
)

from artlora.errors import ArtloraError


class ConfigError(ArtloraError, ValueError):
    """A config problem, phrased for the user: which field, what is wrong, what to do."""


# A bucket name (lower-case letters, digits, dots, hyphens; the store checks the rest), and the segments a safe
# key may not have.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}")
_UNSAFE_SEGMENTS = ("", ".", "..")


def check_s3_uri(value: str) -> str:
    """An s3:// URI whose key, used as a path, stays where it says: no `.` or `..` segment, no empty segment
    (`//`, a leading `/`), no backslash or control character. Checked when a config is validated, so that a bad
    URI is refused before any task starts."""
    bucket, _, key = value.removeprefix("s3://").partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(f"{value!r} has no valid bucket name (lower-case letters, digits, dots or hyphens)")
    segments = key.rstrip("/").split("/") if key else []
    if any(segment in _UNSAFE_SEGMENTS for segment in segments) or re.search(r"[\\\x00-\x1f\x7f]", key):
        raise ValueError(
            f"{value!r} is not a safe object prefix: no '.', '..' or empty segments, backslashes or control "
            "characters (write the prefix it should name)"
        )
    return value


class LeftOutAtDefault(BaseModel):
    """A model some of whose fields are left out of its dumps (`model_dump`, `model_dump_json`) while they hold
    their defaults: settings added after runs were made, so that the run keys and config digests hashed from
    the dumps, and the compiled pipeline that embeds one, stay what they were until such a setting is set.
    Reading a dump back gives the same model: a missing field takes its default."""

    left_out_at_default: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _leave_out_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        fields = type(self).model_fields
        for name in self.left_out_at_default:
            if getattr(self, name) == fields[name].default:
                data.pop(name, None)
        return data


class StageConfig(LeftOutAtDefault):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _safe_s3_uris(cls, value: Any, info: ValidationInfo) -> Any:
        return check_s3_uri(value) if isinstance(value, str) and value.startswith("s3://") else value

    def require(self, *names: str) -> None:
        """Fail clearly when an input that the pipeline normally fills is missing."""
        stage = type(self).__name__.removesuffix("Config").lower()
        for name in names:
            if getattr(self, name) in (None, ""):
                raise ConfigError(
                    f"{stage}.{name} is required when the {stage} stage runs alone: "
                    f"pass --set {stage}.{name}=... (the stage before prints it)"
                )

    def given(self, name: str) -> str:
        """The value of an input that the pipeline normally fills (`require` names it when it is missing)."""
        self.require(name)
        value = getattr(self, name)
        if not isinstance(value, str):
            raise TypeError(f"{type(self).__name__}.{name} is not a string input: {value!r}")
        return value


StorageRoot = Field(
    description="s3:// prefix under which datasets/, cache/ and runs/ are kept", pattern=r"^s3://[a-z0-9.-]{3,}"
)
BaseModelRef = Field(
    description="base Stable Diffusion model: hub id (org/name), local diffusers folder, s3:// prefix "
    "of a diffusers folder, or a single .safetensors file"
)
Experiment = Field("artlora", description="MLflow experiment that the stage's run is logged to")
Seed = Field(0, ge=0, description="random seed; the same seed and inputs give the same result")
