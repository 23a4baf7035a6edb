"""JSON shapes of the HTTP API; FastAPI turns them into the OpenAPI schema at /openapi.json."""

from typing import Literal

from pydantic import BaseModel, Field


class HelloAnswer(BaseModel):
    """The original client's answer: a flat object of strings."""

    item: str = Field(description="base64 of the UTF-8 label of the most prominent product")


class Box(BaseModel):
    """A box in original-photo pixels (after EXIF orientation)."""

    x1: float
    y1: float
    x2: float
    y2: float


class LabelFields(BaseModel):
    """A `name_container_size` label split into its fields; a blank field is null."""

    name: str | None
    container: str | None
    size: str | None


class Candidate(BaseModel):
    label: str
    confidence: float = Field(ge=0, le=1)


class Product(BaseModel):
    box: Box
    source: Literal["detector", "whole_photo"] = Field(
        description="'whole_photo' when nothing was detected and the whole photo was classified"
    )
    detector_confidence: float | None = Field(description="null for a whole-photo entry")
    known: bool = Field(description="false when the top candidate's confidence is under the unknown threshold")
    label: str | None = Field(description="the top candidate's label; null when unknown")
    fields: LabelFields | None = Field(description="the label's parsed fields; null when unknown")
    confidence: float = Field(ge=0, le=1, description="classifier confidence of the top candidate")
    candidates: list[Candidate] = Field(description="top-k labels, most likely first")


class PhotoInfo(BaseModel):
    width: int
    height: int
    format: str


class ModelVersions(BaseModel):
    detector: str
    classifier: str


class Timings(BaseModel):
    """Milliseconds spent in each stage of this request, queueing included."""

    read_ms: float
    decode_ms: float
    detect_ms: float
    crop_ms: float
    classify_ms: float
    total_ms: float


class Recognition(BaseModel):
    photo: PhotoInfo
    whole_photo: bool = Field(description="true when nothing was detected and the whole photo was classified")
    products: list[Product] = Field(description="largest first")
    models: ModelVersions
    timings: Timings


class Labels(BaseModel):
    count: int
    labels: list[str] = Field(description="in the classifier's output order")
    classifier: str


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable: e.g. empty_image, not_an_image, body_too_large")
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    detail: dict[str, str] = {}
