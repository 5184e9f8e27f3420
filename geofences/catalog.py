"""What a catalog is: stores with geofences, campaigns with offers and caps, and defaults.

These are the typed, validated shapes of the marketers' YAML (see README, "Catalog format").
Parsing positions and cross-file checks live in ``geofences.load``; geometry in ``shapes``.
"""

from __future__ import annotations

import re
import string
from datetime import date, timedelta
from functools import cached_property
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from geofences.timespec import WEEKDAYS, Window, expand_days, parse_duration

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
LOCALE_PATTERN = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
PLACEHOLDERS = {"store.name", "store.id", "store.address", "campaign.id", "campaign.name"}
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _window(value: object) -> Window:
    if isinstance(value, Window):
        return value
    return Window.parse(value)  # type: ignore[arg-type]


def _duration(value: object) -> timedelta:
    return value if isinstance(value, timedelta) else parse_duration(value)


WindowField = Annotated[Window, BeforeValidator(_window), PlainSerializer(str)]
Duration = Annotated[timedelta, BeforeValidator(_duration), PlainSerializer(lambda d: f"{int(d.total_seconds())}s")]
Id = Annotated[str, Field(pattern=ID_PATTERN)]


def _day_key(key: str) -> str:
    expand_days(key)  # raises with a clear message
    return key


DayKey = Annotated[str, AfterValidator(_day_key)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def check_timezone(tz: str | None) -> str | None:
    if tz is None:
        return None
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {tz!r} (expected an IANA name like Asia/Tokyo)") from None
    return tz


def check_locale(code: str) -> str:
    if not LOCALE_PATTERN.match(code):
        raise ValueError(f"{code!r} is not a locale (expected e.g. ja, en, en-US)")
    return code


class Circle(Strict):
    """A circle on the earth: centre and radius in metres (10 m to 10 km)."""

    lat: float = Field(ge=-85, le=85, allow_inf_nan=False)
    lng: float = Field(ge=-180, le=180, allow_inf_nan=False)
    radius_m: float = Field(ge=10, le=10_000, allow_inf_nan=False)


class GeofenceSpec(Strict):
    """Exactly one of: ``circle``, ``polygon`` (rings of [lat, lng]), ``multipolygon``."""

    circle: Circle | None = None
    polygon: list[Any] | None = None
    multipolygon: list[Any] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> GeofenceSpec:
        given = [k for k in ("circle", "polygon", "multipolygon") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "a geofence needs exactly one of circle, polygon, multipolygon"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class Store(Strict):
    """A physical store and the geofence around it."""

    id: Id
    name: str = Field(min_length=1, max_length=120)
    names: dict[str, str] = Field(default_factory=dict, description="Localised names.")
    timezone: str | None = None
    tags: list[str] = Field(default_factory=list)
    address: str | None = None
    hours: dict[DayKey, list[WindowField] | Literal["closed"]] | None = None
    geofence: GeofenceSpec

    _tz = field_validator("timezone")(check_timezone)

    @field_validator("names")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for code, name in v.items():
            check_locale(code)
            if not name.strip():
                raise ValueError(f"empty name for locale {code!r}")
        return v

    @field_validator("hours", mode="before")
    @classmethod
    def _hours(cls, v: object) -> object:
        if not isinstance(v, dict):
            return v
        return {str(key): [w] if isinstance(w, str) and w != "closed" else w for key, w in v.items()}

    def hours_by_day(self) -> dict[str, tuple[Window, ...]] | None:
        """Opening windows per weekday (mon..sun); None means always open. Read only (shared)."""
        return self._opening_days

    @cached_property
    def _opening_days(self) -> dict[str, tuple[Window, ...]] | None:
        """hours_by_day, worked out once per store: schedules ask for it on every campaign check."""
        if self.hours is None:
            return None
        days: dict[str, tuple[Window, ...]] = {d: () for d in WEEKDAYS}
        for key, windows in self.hours.items():
            for day in expand_days(key):
                days[day] = () if windows == "closed" else tuple(windows)
        return days

    def local_name(self, locale: str) -> str:
        return self.names.get(locale) or self.names.get(locale.split("-")[0]) or self.name


class OfferText(Strict):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=1000)

    @field_validator("title", "body")
    @classmethod
    def _not_blank_and_known_fields(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        for _, field, _, _ in string.Formatter().parse(v):
            if field is not None and field not in PLACEHOLDERS:
                raise ValueError(
                    f"unknown field {{{field}}} (expected one of "
                    + ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
                    + ")"
                )
        return v


class Offer(Strict):
    """The push itself: text per locale (at least one), and where tapping it leads."""

    deeplink: str | None = Field(None, max_length=500)
    text: dict[str, OfferText] = Field(min_length=1)
    valid_for: Duration | None = Field(None, description="Offer lifetime (FCM TTL) cap.")

    @field_validator("text")
    @classmethod
    def _locales(cls, v: dict[str, OfferText]) -> dict[str, OfferText]:
        for code in v:
            check_locale(code)
        return v


class CountCap(Strict):
    """At most ``max`` notifications in any rolling ``window``."""

    max: int = Field(ge=1)
    window: Duration


class Caps(Strict):
    store_cooldown: Duration | None = None
    per_campaign: CountCap | None = None
    per_device: CountCap | None = None
    budget: int | None = Field(None, ge=1, description="Total notifications the campaign may send.")


class Active(Strict):
    """When a campaign may fire, in each store's local time."""

    from_: date = Field(alias="from")
    until: date
    hours: list[WindowField] | None = None
    days: list[Weekday] | None = None

    @field_validator("hours", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _ordered(self) -> Active:
        if self.until < self.from_:
            raise ValueError(f"until ({self.until}) is before from ({self.from_})")
        return self


class StoreSelector(Strict):
    ids: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> StoreSelector:
        if not self.ids and not self.tags:
            raise ValueError("select stores by ids and/or tags")
        return self


class Campaign(Strict):
    id: Id
    name: str | None = None
    stores: StoreSelector
    trigger: Literal["enter", "dwell", "exit"]
    dwell_seconds: int | None = Field(None, ge=10, le=86_400)
    active: Active
    respect_store_hours: bool = True
    offer: Offer
    caps: Caps = Field(default_factory=lambda: Caps())
    priority: int = Field(0, description="Higher wins when several campaigns fire at once.")

    @model_validator(mode="after")
    def _dwell(self) -> Campaign:
        if self.trigger == "dwell" and self.dwell_seconds is None:
            raise ValueError("trigger dwell needs dwell_seconds")
        if self.trigger != "dwell" and self.dwell_seconds is not None:
            raise ValueError(f"dwell_seconds only applies to trigger dwell (trigger is {self.trigger})")
        return self


class Defaults(Strict):
    timezone: str = "UTC"
    quiet_hours: WindowField | None = Field(default_factory=lambda: Window.parse("21:00-09:00"))
    min_accuracy_m: float = Field(100.0, gt=0, le=5000)
    exit_buffer_m: float = Field(30.0, ge=0, le=1000)
    locale: str = "en"
    caps: Caps = Field(
        default_factory=lambda: Caps(
            store_cooldown=timedelta(hours=24),
            per_device=CountCap(max=3, window=timedelta(days=1)),
            per_campaign=CountCap(max=1, window=timedelta(days=1)),
        )
    )

    _tz = field_validator("timezone")(check_timezone)
    _loc = field_validator("locale")(check_locale)
