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
    known: bool = Field(description="false when the top candidate's confidence is under the unknown threshold and "
                                    "the catalog does not name the product")
    label: str | None = Field(description="the enrolled product's label when label_source is 'catalog', else the top "
                                          "candidate's; null when unknown")
    fields: LabelFields | None = Field(description="the label's parsed fields; null when unknown")
    confidence: float = Field(ge=0, le=1, description="classifier confidence of the top candidate")
    candidates: list[Candidate] = Field(description="top-k labels, most likely first")
    label_source: Literal["model", "catalog"] = Field(
        "model", description="'catalog' when an enrolled product of the catalog named it (label, sku, similarity)")
    sku: str | None = Field(None, description="the enrolled product's sku when label_source is 'catalog'")
    similarity: float | None = Field(None, description="cosine similarity to the enrolled product's closest photo, "
                                                       "when the catalog was asked (whoever named the product)")


class PhotoInfo(BaseModel):
    width: int
    height: int
    format: str


class ModelVersions(BaseModel):
    detector: str
    classifier: str
    catalog: int | None = Field(None, description="the catalog version matched against; null: no catalog")


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
    applied: bool | Literal["unknown"] | None = Field(None, description=(
        "a catalog write's 503 only: false when the write was never sent, \"unknown\" when the Catalog went away "
        "under it (applied whole or not at all: read the catalog before retrying)"))
    unknown: list[str] | None = Field(None, description="unknown_class only: the labels that are not the serving "
                                                        "classifier's trained classes")


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    detail: dict[str, str] = {}


# ---------------------------------------------------------------- the catalog (/v1/catalog)


class PhotoAccepted(BaseModel):
    index: int = Field(description="the photo part's position among the request's photo parts, from 0")
    filename: str


class PhotoRejected(PhotoAccepted):
    reason: Literal["no_product", "unreadable", "duplicate_of_other_sku", "too_large"]
    detail: str | None = None
    similar_sku: str | None = Field(None, description="for duplicate_of_other_sku: the sku it nearly duplicates")
    similarity: float | None = Field(None, description="for duplicate_of_other_sku: the cosine similarity")


class PhotoOnceEnrolled(BaseModel):
    """What the service will answer for an accepted photo once enrolled, asked as recognition asks its largest
    product (its crop) against the catalog less that photo: the product's other photos and every other product."""

    position: int = Field(description="the photo part's index in the request, as in accepted")
    answered_as: Literal["this_product", "other_product", "trained_class", "unknown", "alone"] = Field(
        description="alone: the product's only photo, nothing to ask it against")
    label: str | None = Field(description="what the service would answer (null: unknown)")
    sku: str | None = Field(description="the enrolled product named, when the catalog names one")
    product_similarity: float | None = Field(description="cosine to this product's nearest other photo")
    model_label: str | None = Field(description="the classifier's own answer for the photo's product")
    model_confidence: float | None
    training_label: str | None = Field(description="the trained class of the nearest photo the classifier was trained "
                                                   "on: the class the product may take precedence over")
    training_similarity: float | None
    reason: str = Field(description="why, in words")


class AnsweredAsProduct(BaseModel):
    photos: int = Field(description="how many of the photos asked will be answered as this product")
    of: int = Field(description="the photos asked (all accepted ones but a product's only photo)")


class Enrollment(BaseModel):
    sku: str
    label: str
    catalog_version: int = Field(description="the catalog version this write made")
    accepted: list[PhotoAccepted]
    rejected: list[PhotoRejected]
    feedback: list[PhotoOnceEnrolled] | None = Field(None, description=(
        "per accepted photo, what the service will answer for it once enrolled, and why; null when it cannot be "
        "computed (feedback_unavailable says why): the photos are enrolled either way"))
    answered_as_product: AnsweredAsProduct | None = None
    feedback_unavailable: str | None = None


class CatalogProduct(BaseModel):
    sku: str
    label: str
    photos: int
    photo_ids: list[int] | None = Field(None, description="in GET /v1/catalog/products/{sku} only")
    precedence: list[str] = Field(default_factory=list, description=(
        "the trained classes (their labels) this product takes precedence over in this store: for a crop whose "
        "nearest enrolled product is this one, the classifier's answers of those classes are set aside "
        "(PUT /v1/catalog/products/{sku}/precedence)"))
    created: str
    updated: str


class CatalogProducts(BaseModel):
    total: int
    offset: int
    limit: int
    products: list[CatalogProduct]


class CatalogInfo(BaseModel):
    version: int = Field(description="every write makes a new version")
    products: int
    photos: int
    model_version: str = Field(description="the embedding space the catalog matches in: the classifier whose embeddings it "
                                           "holds, and how an enrolled photo is embedded "
                                           "('<classifier version>/crop+whole[@<whole-photo view>]')")
    matchable_photos: int = Field(description="photos embedded by that classifier (the others wait for re-embedding)")
    photos_needing_embedding: int
    updated: str | None


class CatalogWrite(BaseModel):
    catalog_version: int
    sku: str | None = None
    restored: int | None = Field(None, description="for a rollback: the version whose products are current again")
    removed_photo: int | None = Field(None, description="for a photo's removal: its id")


class CatalogVersion(BaseModel):
    """One version of the catalog: the write that made it, from the audit log."""

    version: int
    time: str = Field(description="when it was written: ISO 8601, UTC")
    action: Literal["enroll", "replace", "add_photos", "remove_photo", "precedence", "delete", "rollback", "reembed"] = Field(
        description="replace: an enrollment (replace=true) of an enrolled sku; precedence: what the product takes "
                    "precedence over changed; reembed: the switch to a new model")
    sku: str | None = Field(description="the product written; null for a rollback or a re-embedding")
    label: str | None = None
    change: str = Field(description="what changed, in words")
    operator: str = Field(description="who: the writer's X-Operator name ('admin' when none was sent), or the "
                                      "command that wrote")
    address: str | None = Field(description="the writer's client address, as the ingress saw it")
    added_photo_ids: list[int] = Field(description="the photos this version added")
    removed_photo_ids: list[int] = Field(description="the photos it took away (replaced, removed, or the deleted "
                                                     "product's)")
    to_version: int | None = Field(None, description="for a rollback: the version whose products it made current")


class CatalogHistory(BaseModel):
    total: int = Field(description="how many versions there are (the latest version's number)")
    offset: int
    limit: int
    versions: list[CatalogVersion] = Field(description="newest first")


class Rollback(BaseModel):
    version: int = Field(ge=0, description="the catalog version whose products become current again, as a new version")


class PrecedenceWrite(BaseModel):
    catalog_version: int = Field(description="the catalog version this write made (the current one when it changed nothing)")
    product: CatalogProduct
