"""The typed query model: a subset of PostHog's query schema, with PostHog's field names.

Scripts written for PostHog's ``/query`` API send the same JSON here. Unknown fields are ignored
(PostHog has many display-only ones); known fields are validated, so a bad value is a 400 that
names the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

PropertyOperator = Literal[
    "exact", "is_not", "icontains", "not_icontains", "regex", "not_regex", "gt", "gte", "lt", "lte",
    "is_set", "is_not_set", "is_date_before", "is_date_after", "is_date_exact", "in", "not_in",
]
Interval = Literal["minute", "hour", "day", "week", "month"]


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class PropertyFilter(Model):
    key: str
    value: Any = None
    operator: PropertyOperator = "exact"
    type: Literal["event", "person", "group", "cohort", "session", "element", "hogql"] = "event"
    group_type_index: int | None = None


class PropertyGroup(Model):
    """``{"type": "AND"|"OR", "values": [filters or groups]}``: PostHog's nested filter form."""

    type: Literal["AND", "OR"] = "AND"
    values: list[Union["PropertyGroup", PropertyFilter]] = Field(default_factory=list)


Properties = Union[list[PropertyFilter], PropertyGroup, None]


class DateRange(Model):
    date_from: str | None = "-7d"
    date_to: str | None = None
    explicitDate: bool = False


MathKind = Literal[
    "total", "dau", "weekly_active", "monthly_active", "unique_session", "unique_group",
    "sum", "avg", "min", "max", "median", "p75", "p90", "p95", "p99",
    "avg_count_per_actor", "min_count_per_actor", "max_count_per_actor", "median_count_per_actor",
    "p90_count_per_actor", "p95_count_per_actor", "p99_count_per_actor",
    "first_time_for_user",
]


class EventsNode(Model):
    kind: Literal["EventsNode"] = "EventsNode"
    event: str | None = None  # None means all events
    name: str | None = None
    custom_name: str | None = None
    math: MathKind = "total"
    math_property: str | None = None
    math_group_type_index: int | None = None
    properties: Properties = None

    @field_validator("math_property")
    @classmethod
    def _no_empty(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("math_property must not be empty")
        return v


class BreakdownFilter(Model):
    breakdown_type: Literal["event", "person", "group", "session", "cohort"] | None = "event"
    breakdown: str | int | list[str | int] | None = None
    breakdown_limit: int | None = Field(default=None, ge=1, le=1000)
    breakdown_group_type_index: int | None = None
    breakdown_hide_other_aggregation: bool = False


class CompareFilter(Model):
    compare: bool = False
    compare_to: str | None = None


class TrendsFilter(Model):
    display: str | None = "ActionsLineGraph"
    formula: str | None = None
    formulas: list[str] | None = None
    smoothingIntervals: int = Field(default=1, ge=1, le=366)


class InsightQuery(Model):
    dateRange: DateRange = Field(default_factory=DateRange)
    properties: Properties = None
    filterTestAccounts: bool = False
    aggregation_group_type_index: int | None = Field(default=None, ge=0, le=4)


class TrendsQuery(InsightQuery):
    kind: Literal["TrendsQuery"] = "TrendsQuery"
    series: list[EventsNode] = Field(min_length=1, max_length=26)
    interval: Interval = "day"
    breakdownFilter: BreakdownFilter | None = None
    trendsFilter: TrendsFilter = Field(default_factory=TrendsFilter)
    compareFilter: CompareFilter | None = None


class FunnelExclusion(Model):
    kind: Literal["EventsNode"] = "EventsNode"
    event: str
    funnelFromStep: int = Field(ge=0)
    funnelToStep: int = Field(ge=1)
    properties: Properties = None


class FunnelsFilter(Model):
    funnelOrderType: Literal["ordered", "strict", "unordered"] = "ordered"
    funnelWindowInterval: int = Field(default=14, ge=1)
    funnelWindowIntervalUnit: Literal["second", "minute", "hour", "day", "week", "month"] = "day"
    exclusions: list[FunnelExclusion] = Field(default_factory=list)
    breakdownAttributionType: Literal["first_touch", "last_touch", "all_events", "step"] = "first_touch"
    breakdownAttributionValue: int | None = None
    funnelVizType: Literal["steps", "time_to_convert", "trends"] = "steps"
    funnelFromStep: int | None = None
    funnelToStep: int | None = None
    binCount: int | None = Field(default=None, ge=1, le=90)


class FunnelsQuery(InsightQuery):
    kind: Literal["FunnelsQuery"] = "FunnelsQuery"
    series: list[EventsNode] = Field(min_length=2, max_length=20)
    interval: Interval = "day"
    funnelsFilter: FunnelsFilter = Field(default_factory=FunnelsFilter)
    breakdownFilter: BreakdownFilter | None = None


class RetentionEntity(Model):
    id: str | None = None  # event name
    name: str | None = None
    type: Literal["events", "actions"] = "events"
    properties: Properties = None

    @property
    def event(self) -> str | None:
        return self.id if self.id is not None else self.name


class RetentionFilter(Model):
    targetEntity: RetentionEntity = Field(default_factory=lambda: RetentionEntity(id="$pageview"))
    returningEntity: RetentionEntity = Field(default_factory=lambda: RetentionEntity(id="$pageview"))
    period: Literal["Hour", "Day", "Week", "Month"] = "Day"
    totalIntervals: int = Field(default=11, ge=1, le=120)
    retentionType: Literal["retention_recurring", "retention_first_time",
                           "retention_first_ever_occurrence"] = "retention_recurring"
    cumulative: bool = False


class RetentionQuery(InsightQuery):
    kind: Literal["RetentionQuery"] = "RetentionQuery"
    retentionFilter: RetentionFilter = Field(default_factory=RetentionFilter)
    breakdownFilter: BreakdownFilter | None = None


class LifecycleQuery(InsightQuery):
    kind: Literal["LifecycleQuery"] = "LifecycleQuery"
    series: list[EventsNode] = Field(min_length=1, max_length=1)
    interval: Interval = "day"


class StickinessQuery(InsightQuery):
    kind: Literal["StickinessQuery"] = "StickinessQuery"
    series: list[EventsNode] = Field(min_length=1, max_length=26)
    interval: Interval = "day"
    stickinessFilter: dict | None = None  # validated in sightline.query.stickiness


class PathsFilter(Model):
    includeEventTypes: list[Literal["$pageview", "custom_event", "$screen", "hogql"]] = Field(
        default_factory=lambda: ["$pageview"])
    startPoint: str | None = None
    endPoint: str | None = None
    stepLimit: int = Field(default=5, ge=2, le=20)
    edgeLimit: int = Field(default=50, ge=1, le=1000)
    pathReplacements: bool = True
    localPathCleaningFilters: list[dict] = Field(default_factory=list)
    excludeEvents: list[str] = Field(default_factory=list)
    minEdgeWeight: int | None = None
    maxEdgeWeight: int | None = None


class PathsQuery(InsightQuery):
    kind: Literal["PathsQuery"] = "PathsQuery"
    pathsFilter: PathsFilter = Field(default_factory=PathsFilter)


class HogQLQuery(Model):
    kind: Literal["HogQLQuery"] = "HogQLQuery"
    query: str


AnyQuery = Annotated[
    Union[TrendsQuery, FunnelsQuery, RetentionQuery, LifecycleQuery, StickinessQuery, PathsQuery,
          HogQLQuery],
    Field(discriminator="kind"),
]


class QueryRequest(Model):
    query: AnyQuery


PropertyGroup.model_rebuild()
