"""Demo warehouse: a realistic synthetic history of customers, their contacts and their churn.

:func:`generate_demo` simulates the five source tables of the data contract over ``days`` days
ending at ``end`` (exclusive), week by week, vectorised over customers with numpy. Each week,
for every customer who is subscribed:

1. the churn hazard is computed from what the customer has lived through so far: a decaying
   *grievance* built from the moments of truth (complaints, answers that came late or never,
   public complaints nobody replied to, transfers, reopenings, bad experiences that show in
   CSAT), complaints still open, falling engagement, a retention offer recently accepted, the
   segment, tenure and the season, plus an unobserved personal frailty. Customers who decide
   to leave cancel now or after a notice period of up to three weeks, during which they use
   the service much less and sometimes ask to cancel;
2. that week's interactions are drawn (channel, kind, how fast and whether they were answered
   and resolved, transfers, reopenings, CSAT), and that week's activity events (logins, orders,
   refunds, support visits, reviews, referrals) at a rate that follows the customer's
   engagement;
3. grievance, open complaints and engagement are updated from the week's experience; plan
   changes (downgrades follow grievance, upgrades follow engagement), re-activations of former
   customers and retention-team contacts are drawn.

Occasional regional outages, seasonal peaks, segment differences, customers whose engagement
drifts away for no visible reason and the frailty keep the signal honest. The simulation starts
:data:`WARM_UP_WEEKS` before the history, unrecorded, so the history opens in a steady state.
Answers and resolutions that happen after the end of the history are null (not known yet), as
they would be in a warehouse extracted at ``end``. Calibrated on 20,000 customers over a year:
about 3 % of subscribers leave per month, and customers with an open complaint or an unanswered
public complaint leave the next month four to six times as often as the others.

:func:`load_demo` writes the frames into an empty warehouse; :func:`warehouse_summary`
describes what a warehouse holds.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import sqlalchemy as sa
from numpy.typing import NDArray

from warehouse.schema import SOURCE_TABLES, Warehouse, contract_schema

I64 = NDArray[np.int64]
I32 = NDArray[np.int32]
U8 = NDArray[np.uint8]
F64 = NDArray[np.float64]
Mask = NDArray[np.bool_]

US_PER_SECOND = 1_000_000
US_PER_HOUR = 3_600 * US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR
US_PER_WEEK = 7 * US_PER_DAY
NEVER = np.iinfo(np.int64).max
"""Time stamp (microseconds) standing for "not happened"."""

FIRST_CUSTOMER_ID = 1_000_001
"""Customer ids are ``FIRST_CUSTOMER_ID + i``, so they never coincide with row numbers."""

# -- customers ------------------------------------------------------------------------------------

SEGMENTS = ("consumer", "smb", "enterprise")
SEGMENT_SHARE = (0.80, 0.16, 0.04)
PLANS = (
    (("basic", 12.99), ("standard", 24.99), ("premium", 44.99)),
    (("starter", 99.0), ("team", 249.0), ("business", 499.0)),
    (("enterprise_core", 1500.0), ("enterprise_plus", 3500.0), ("enterprise_max", 8000.0)),
)
"""Plan ladder per segment, cheapest first: (name, list price per month)."""
PLAN_RANK_SHARE = (0.45, 0.38, 0.17)
DISCOUNTS = (0.0, 0.1, 0.2)
DISCOUNT_SHARE = (0.72, 0.19, 0.09)

COUNTRIES = ("GB", "US", "DE", "FR", "NL", "ES", "IE", "SE")
COUNTRY_SHARE = (0.30, 0.22, 0.15, 0.11, 0.07, 0.08, 0.04, 0.03)
LANGUAGE_MAIN = ("en", "en", "de", "fr", "nl", "es", "en", "sv")
LANGUAGE_OTHER = ("pl", "es", "en", "en", "en", "ca", "ga", "en")
LANGUAGES = ("en", "de", "fr", "nl", "es", "sv", "pl", "ca", "ga")
SHARE_OTHER_LANGUAGE = 0.12
SHARE_LANGUAGE_UNKNOWN = 0.01

SHARE_JOINED_PER_YEAR = 0.28
"""Customers who sign up during the history, per year of history (of all customers)."""
WARM_UP_WEEKS = 8
"""Weeks simulated before the history starts (and not recorded), so it starts in a steady state."""
SHARE_GONE_BEFORE = 0.10
"""Customers who had already left before the history starts (some come back)."""
MEAN_AGE_DAYS = 700.0
MAX_AGE_DAYS = 6 * 365

# -- churn ----------------------------------------------------------------------------------------

WEEKLY_HAZARD = (0.0024, 0.0016, 0.0009)
"""Baseline weekly churn hazard per segment (before experience, tenure, season, frailty)."""
FRAILTY_SIGMA = 0.45
NEW_CUSTOMER_EXCESS = 1.0
NEW_CUSTOMER_WEEKS = 10.0
CHURN_SEASON_AMPLITUDE = 0.18
"""Churn peaks in January, dips in July."""
GRIEVANCE_EFFECT = 0.5
GRIEVANCE_CAP = 8.0
GRIEVANCE_HALF_LIFE_WEEKS = 4.0
OPEN_COMPLAINT_EFFECT = 0.35
OPEN_COMPLAINT_FRESH_EFFECT = 0.65
OPEN_COMPLAINT_FRESH_WEEKS = 8.0
DISENGAGEMENT_EFFECT = 1.6
OFFER_EFFECT = -0.7
OFFER_WEEKS = 8
NOTICE_WEEKS = (0, 1, 2, 3)
NOTICE_SHARE = (0.20, 0.35, 0.28, 0.17)
NOTICE_ACTIVITY = 0.25
NOTICE_CONTACT = 1.4
NOTICE_EXTRA_REQUEST = 0.25

# -- engagement -----------------------------------------------------------------------------------

HABIT_SIGMA = 0.5
"""Spread of personal usage level; the level itself does not drive churn, a decline does."""
ENGAGEMENT_START_SIGMA = 0.25
ENGAGEMENT_REVERSION = 0.12
ENGAGEMENT_NOISE = 0.07
ENGAGEMENT_PAIN = 0.10
SHARE_DRIFTING = 0.2
DRIFT_PER_WEEK = 0.08
DRIFT_FLOOR = -2.0

# -- interactions ---------------------------------------------------------------------------------

CHANNELS = ("phone", "email", "chat", "web", "store", "twitter", "facebook", "instagram")
PUBLIC_CHANNELS = ("twitter", "facebook", "instagram")
KINDS = ("complaint", "query", "request", "praise")
COMPLAINT, QUERY, REQUEST, PRAISE = range(4)

WEEKLY_CONTACTS = (0.12, 0.25, 0.6)
CONTACT_SEASON_AMPLITUDE = 0.15
"""Contact volume peaks in December."""
CHANNEL_WEIGHT = (
    (0.22, 0.16, 0.20, 0.12, 0.08, 0.09, 0.08, 0.05),
    (0.30, 0.30, 0.15, 0.12, 0.03, 0.05, 0.03, 0.02),
    (0.40, 0.45, 0.07, 0.05, 0.00, 0.02, 0.01, 0.00),
)
PUBLIC_PULL = (2.0, 1.0, 0.5, 2.5)
"""Per kind: how much more often that kind goes to a public channel."""
COMPLAINT_SHARE = 0.17
COMPLAINT_PER_GRIEVANCE = 0.06
REQUEST_SHARE = 0.27
PRAISE_SHARE = 0.08

FIRST_RESPONSE_MEDIAN_S = (180.0, 6 * 3600.0, 90.0, 10 * 3600.0, 300.0, 8 * 3600.0, 12 * 3600.0,
                           16 * 3600.0)  # fmt: skip
FIRST_RESPONSE_SIGMA = (1.0, 1.1, 1.0, 1.1, 0.7, 1.4, 1.4, 1.4)
UNANSWERED = (0.02, 0.05, 0.04, 0.08, 0.005, 0.40, 0.50, 0.60)
UNANSWERED_KIND = (0.8, 1.0, 0.9, 1.6)
SEGMENT_SPEED = (1.0, 0.7, 0.4)
SEGMENT_UNANSWERED = (1.0, 0.7, 0.3)

TRANSFERS_MEAN = (0.45, 0.25, 0.30, 0.20, 0.15, 0.10, 0.10, 0.10)
TRANSFERS_KIND = (1.8, 0.6, 1.2, 0.05)
LEFT_OPEN = (0.14, 0.03, 0.06, 0.0)
LEFT_OPEN_PUBLIC = 1.5
RESOLVE_MEDIAN_H = (36.0, 0.25, 20.0, 0.0)
RESOLVE_SIGMA = (1.3, 1.0, 1.2, 0.0)
RESOLVE_PER_TRANSFER = 1.35
REOPEN_BASE = (0.07, 0.0, 0.035, 0.0)
REOPEN_PER_TRANSFER = (0.05, 0.0, 0.025, 0.0)
REOPEN_MAX = 0.3
REOPEN_MEDIAN_H = 72.0
CSAT_SURVEYED = 0.35

PAIN_KIND = (0.5, 0.03, 0.1, -0.4)
PAIN_UNANSWERED = (1.4, 0.3, 0.6, 0.0)
PAIN_UNANSWERED_PUBLIC = (2.2, 0.5, 0.8, 0.0)
PAIN_SLOW = (0.2, 0.08, 0.15, 0.0)
PAIN_TRANSFER = 0.3
PAIN_REOPENED = 0.7
PAIN_SATISFACTION = 0.3

OUTAGE_PROBABILITY = 0.12
"""Chance per week that an outage hits one country: more contacts, more of them complaints."""
OUTAGE_CONTACTS = 2.5
OUTAGE_COMPLAINTS = 0.3

# -- activity -------------------------------------------------------------------------------------

EVENT_TYPES = ("login", "order", "refund", "support_visit", "review", "referral")
LOGIN, ORDER, REFUND, SUPPORT_VISIT, REVIEW, REFERRAL = range(6)
WEEKLY_EVENTS = (
    (0.55, 0.18, 0.010, 0.045, 0.010, 0.006),
    (1.20, 0.30, 0.020, 0.080, 0.005, 0.004),
    (2.50, 0.50, 0.030, 0.120, 0.002, 0.002),
)
ORDER_MEDIAN = (38.0, 320.0, 2400.0)
REFUND_MEDIAN = (30.0, 250.0, 1500.0)
VALUE_SIGMA = 0.6
REFUND_PER_COMPLAINT = 0.25
SUPPORT_VISIT_PER_PAIN = 0.5
ORDER_PEAK_DAY = 340
ORDER_PEAK = 0.35
HOUR_WEIGHT = (1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 4, 5, 5.5, 5.5,
               6, 5.5, 5, 5, 5, 5, 5.5, 6, 6, 5, 3.5, 2)  # fmt: skip

# -- plans, re-activation, retention team ---------------------------------------------------------

WEEKLY_DOWNGRADE = 0.0012
DOWNGRADE_PER_GRIEVANCE = 0.35
WEEKLY_UPGRADE = 0.0012
WEEKLY_REACTIVATION = 0.006
REACTIVATION_MIN_WEEKS = 4
REACTIVATION_DECAY_WEEKS = 26.0
WEEKLY_CONTACT_BASE = 0.0004
WEEKLY_CONTACT_PER_GRIEVANCE = 0.003
CONTACT_VALUE_WEIGHT = (1.0, 2.0, 3.0)
CONTACT_COOLDOWN_WEEKS = 6
OUTCOMES = ("offer_accepted", "offer_declined", "no_answer", "callback_requested")
OUTCOME_SHARE = (0.35, 0.33, 0.25, 0.07)
OUTCOME_UNRECORDED = 0.03
SAVED_FROM_NOTICE = 0.5


@dataclass
class _Population:
    """Per-customer state of the simulation, one array element per customer."""

    segment: U8
    country: U8
    signup: I64
    status: U8  # 0 not yet a customer, 1 subscribed, 2 left
    plan_rank: U8
    signup_plan_rank: U8
    discount: F64
    row_start: I64  # start of the current subscription row
    left_at: I64
    frailty: F64
    habit: F64
    engagement: F64
    engagement_target: F64
    drift_from: I64
    grievance: F64
    open_until: I64
    open_since: I64
    notice_step: I32  # step in which the customer cancels, -1 none
    offer_until: I64
    last_contact: I64

    @property
    def size(self) -> int:
        return int(self.segment.shape[0])


@dataclass
class _Chunks:
    """Rows of one output table as lists of numpy arrays, concatenated at the end."""

    columns: dict[str, list[NDArray[Any]]]

    @classmethod
    def of(cls, *names: str) -> _Chunks:
        return cls({name: [] for name in names})

    def add(self, **arrays: NDArray[Any]) -> None:
        for name, values in arrays.items():
            self.columns[name].append(values)

    def concat(self, name: str, dtype: type[np.generic]) -> NDArray[Any]:
        parts = self.columns[name]
        self.columns[name] = []
        if not parts:
            return np.empty(0, dtype=dtype)
        return np.concatenate(parts).astype(dtype, copy=False)


def _micros(day: date) -> int:
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return int(moment.timestamp()) * US_PER_SECOND


def _pick(rng: np.random.Generator, cumulative: F64, n: int) -> NDArray[np.intp]:
    """Draw ``n`` category indices from one cumulative distribution."""
    picked: NDArray[np.intp] = np.searchsorted(cumulative, rng.random(n) * cumulative[-1], "right")
    return picked


def _pick_rows(rng: np.random.Generator, weights: F64) -> NDArray[np.intp]:
    """Draw one category per row from per-row (unnormalised) weights."""
    cumulative = np.cumsum(weights, axis=1)
    u = rng.random(weights.shape[0]) * cumulative[:, -1]
    picked: NDArray[np.intp] = np.minimum(
        (cumulative <= u[:, None]).sum(axis=1), weights.shape[1] - 1
    )
    return picked


def _cumulative(weights: tuple[float, ...]) -> F64:
    return np.cumsum(np.asarray(weights, dtype=np.float64))


def _times_within(rng: np.random.Generator, start: I64, length: I64) -> I64:
    """Event times in ``[start, start + length)`` with a daily rhythm (busy days, quiet nights)."""
    n = int(start.shape[0])
    uniform = start + (rng.random(n) * length).astype(np.int64)
    day = uniform - uniform % US_PER_DAY
    hour = _pick(rng, _cumulative(HOUR_WEIGHT), n).astype(np.int64)
    shaped = day + hour * US_PER_HOUR + (rng.random(n) * US_PER_HOUR).astype(np.int64)
    inside = (shaped >= start) & (shaped < start + length)
    return np.where(inside, shaped, uniform)


def _day_of_year(moment_us: int) -> int:
    return datetime.fromtimestamp(moment_us / US_PER_SECOND, tz=UTC).timetuple().tm_yday


def _season(moment_us: int, peak_day: int, amplitude: float) -> float:
    """Yearly cycle: ``1 + amplitude`` on ``peak_day`` of the year, ``1 - amplitude`` opposite."""
    offset = _day_of_year(moment_us) - peak_day
    return 1.0 + amplitude * math.cos(2.0 * math.pi * offset / 365.25)


def _initial_population(
    rng: np.random.Generator, n: int, origin: int, start: int, end: int
) -> tuple[_Population, _Chunks]:
    """Customers as they are at ``origin``, with the subscription rows closed before it.

    Some customers sign up during ``[start, end)``; the others signed up before ``origin``
    and either are subscribed at ``origin`` or had already left.
    """
    days = (end - start) / US_PER_DAY
    share_new = min(0.5, max(0.02, SHARE_JOINED_PER_YEAR * days / 365.0))
    n_new = round(n * share_new)
    n_gone = round(n * SHARE_GONE_BEFORE)
    kind = np.zeros(n, dtype=np.uint8)  # 0 subscribed at start, 1 joins later, 2 gone before
    kind[:n_new] = 1
    kind[n_new : n_new + n_gone] = 2
    kind = rng.permutation(kind)

    segment = _pick(rng, _cumulative(SEGMENT_SHARE), n).astype(np.uint8)
    country = _pick(rng, _cumulative(COUNTRY_SHARE), n).astype(np.uint8)
    plan_rank = _pick(rng, _cumulative(PLAN_RANK_SHARE), n).astype(np.uint8)
    discount = np.asarray(DISCOUNTS)[_pick(rng, _cumulative(DISCOUNT_SHARE), n)]

    age_days = np.minimum(rng.exponential(MEAN_AGE_DAYS, n) + 1.0, MAX_AGE_DAYS)
    age_days = np.where(kind == 2, age_days + 60.0, age_days)
    signup = origin - (age_days * US_PER_DAY).astype(np.int64)
    joins = kind == 1
    signup[joins] = start + (rng.random(int(joins.sum())) * (end - start)).astype(np.int64)

    status = np.where(kind == 2, 2, np.where(joins, 0, 1)).astype(np.uint8)
    row_start = signup.copy()
    left_at = np.full(n, NEVER, dtype=np.int64)
    history = _Chunks.of("customer", "started_at", "ended_at", "plan")

    gone = np.flatnonzero(kind == 2)
    month = 30 * US_PER_DAY
    span = (origin - signup[gone] - month).astype(np.float64)
    left_at[gone] = signup[gone] + month + (rng.random(gone.size) * span).astype(np.int64)
    history.add(
        customer=gone,
        started_at=signup[gone],
        ended_at=left_at[gone],
        plan=segment[gone] * 3 + plan_rank[gone],
    )

    # A quarter of long-standing customers changed plan once before the window.
    tenured = np.flatnonzero((kind == 0) & (age_days > 90))
    changed = tenured[rng.random(tenured.size) < 0.25]
    change_span = (origin - signup[changed] - month).astype(np.float64)
    changed_at = signup[changed] + month + (rng.random(changed.size) * change_span).astype(np.int64)
    step = np.where(rng.random(changed.size) < 0.5, -1, 1)
    previous_rank = np.clip(plan_rank[changed].astype(np.int64) + step, 0, 2)
    previous_rank = np.where(previous_rank == plan_rank[changed], 1, previous_rank)
    history.add(
        customer=changed,
        started_at=signup[changed],
        ended_at=changed_at,
        plan=segment[changed] * 3 + previous_rank,
    )
    row_start[changed] = changed_at
    signup_plan_rank = plan_rank.copy()
    signup_plan_rank[changed] = previous_rank.astype(np.uint8)

    drifting = rng.random(n) < SHARE_DRIFTING
    drift_from = np.where(
        drifting, start + (rng.random(n) * (end - start)).astype(np.int64), NEVER
    ).astype(np.int64)
    grievance = np.where(rng.random(n) < 0.2, rng.exponential(0.5, n), 0.0)
    grievance[kind != 0] = 0.0

    population = _Population(
        segment=segment,
        country=country,
        signup=signup,
        status=status,
        plan_rank=plan_rank,
        signup_plan_rank=signup_plan_rank,
        discount=discount,
        row_start=row_start,
        left_at=left_at,
        frailty=rng.normal(-0.5 * FRAILTY_SIGMA**2, FRAILTY_SIGMA, n),
        habit=rng.normal(0.0, HABIT_SIGMA, n),
        engagement=rng.normal(0.0, ENGAGEMENT_START_SIGMA, n),
        engagement_target=np.zeros(n),
        drift_from=drift_from,
        grievance=grievance,
        open_until=np.full(n, -1, dtype=np.int64),
        open_since=np.full(n, -1, dtype=np.int64),
        notice_step=np.full(n, -1, dtype=np.int32),
        offer_until=np.full(n, -1, dtype=np.int64),
        last_contact=np.full(n, -1, dtype=np.int64),
    )
    return population, history


@dataclass
class _Week:
    """One simulation step: its bounds and the customers subscribed during it."""

    index: int
    start: int
    end: int
    subscribed: I64  # customer indices
    exposure_start: I64
    exposure_length: I64

    @property
    def weeks(self) -> float:
        return (self.end - self.start) / US_PER_WEEK


class _Simulation:
    """The week-by-week simulation; each ``step`` appends that week's rows to the chunks."""

    def __init__(self, n_customers: int, days: int, seed: int, end: date) -> None:
        self.rng = np.random.default_rng(seed)
        self.end = _micros(end)
        self.start = self.end - days * US_PER_DAY
        self.origin = self.start - WARM_UP_WEEKS * US_PER_WEEK
        self.population, self.subscriptions = _initial_population(
            self.rng, n_customers, self.origin, self.start, self.end
        )
        self.interactions = _Chunks.of(
            "customer",
            "opened_at",
            "channel",
            "kind",
            "first_response_at",
            "resolved_at",
            "transfers",
            "reopened",
            "csat",
        )
        self.activity = _Chunks.of("customer", "occurred_at", "event_type", "value")
        self.contacts = _Chunks.of("customer", "contacted_at", "outcome")
        self.prices = np.array([[price for _, price in ladder] for ladder in PLANS])
        self.public = np.array([c in PUBLIC_CHANNELS for c in CHANNELS])
        channel_weight = np.asarray(CHANNEL_WEIGHT, dtype=np.float64)
        pull = np.where(self.public[None, :], np.asarray(PUBLIC_PULL)[:, None], 1.0)
        self.channel_weight = (
            channel_weight[:, None, :] * pull[None, :, :]
        )  # segment, kind, channel

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        bounds = [*range(self.origin, self.end, US_PER_WEEK), self.end]
        for index, (week_start, week_end) in enumerate(itertools.pairwise(bounds)):
            self.step(index, week_start, week_end)
        self.close_open_rows()

    def step(self, index: int, week_start: int, week_end: int) -> None:
        p = self.population
        self.join_and_return(week_start, week_end)
        leaving_at = self.decide_churn(index, week_start, week_end)

        subscribed = np.flatnonzero(p.status == 1)
        exposure_start = np.maximum(p.row_start[subscribed], week_start)
        exposure_end = np.minimum(leaving_at[subscribed], week_end)
        week = _Week(
            index=index,
            start=week_start,
            end=week_end,
            subscribed=subscribed,
            exposure_start=exposure_start,
            exposure_length=exposure_end - exposure_start,
        )
        recording = week_start >= self.start
        pain, complained = self.draw_interactions(week, recording)
        if recording:
            self.draw_activity(week, pain, complained)
        self.update_experience(week, pain)

        leaving = subscribed[leaving_at[subscribed] < week_end]
        self.subscriptions.add(
            customer=leaving,
            started_at=p.row_start[leaving],
            ended_at=leaving_at[leaving],
            plan=p.segment[leaving] * 3 + p.plan_rank[leaving],
        )
        p.status[leaving] = 2
        p.left_at[leaving] = leaving_at[leaving]
        p.notice_step[leaving] = -1

        staying = leaving_at[subscribed] >= week_end
        self.change_plans(week, staying)
        if recording:
            self.retention_contacts(week, staying)

    # -- who is a customer this week --------------------------------------------------------------

    def join_and_return(self, week_start: int, week_end: int) -> None:
        p, rng = self.population, self.rng
        joining = np.flatnonzero((p.status == 0) & (p.signup < week_end))
        p.status[joining] = 1
        p.row_start[joining] = p.signup[joining]

        gone = np.flatnonzero(
            (p.status == 2) & (p.left_at < week_start - REACTIVATION_MIN_WEEKS * US_PER_WEEK)
        )
        weeks_away = (week_start - p.left_at[gone]) / US_PER_WEEK
        weeks = (week_end - week_start) / US_PER_WEEK
        rate = WEEKLY_REACTIVATION * np.exp(-weeks_away / REACTIVATION_DECAY_WEEKS)
        back = gone[rng.random(gone.size) < -np.expm1(-rate * weeks)]
        p.status[back] = 1
        p.row_start[back] = week_start + (rng.random(back.size) * (week_end - week_start)).astype(
            np.int64
        )
        cheaper = rng.random(back.size) < 0.5
        p.plan_rank[back] = np.where(
            cheaper, np.maximum(p.plan_rank[back].astype(np.int64) - 1, 0), p.plan_rank[back]
        ).astype(np.uint8)
        p.grievance[back] *= 0.3
        p.engagement[back] = -0.2
        p.engagement_target[back] = 0.0
        p.drift_from[back] = NEVER
        p.open_until[back] = -1
        p.left_at[back] = NEVER

    def decide_churn(self, index: int, week_start: int, week_end: int) -> I64:
        """Draw decisions to leave; return each customer's cancellation time this week or NEVER."""
        p, rng = self.population, self.rng
        at_risk = np.flatnonzero((p.status == 1) & (p.row_start < week_start) & (p.notice_step < 0))
        seg = p.segment[at_risk]
        tenure_weeks = (week_start - p.signup[at_risk]) / US_PER_WEEK
        open_age_weeks = (week_start - p.open_since[at_risk]) / US_PER_WEEK
        complaint_open = p.open_until[at_risk] > week_start
        log_hazard = (
            np.log(np.asarray(WEEKLY_HAZARD)[seg])
            + math.log(_season(week_start, 15, CHURN_SEASON_AMPLITUDE))
            + np.log1p(NEW_CUSTOMER_EXCESS * np.exp(-tenure_weeks / NEW_CUSTOMER_WEEKS))
            + p.frailty[at_risk]
            + GRIEVANCE_EFFECT * np.minimum(p.grievance[at_risk], GRIEVANCE_CAP)
            + np.where(
                complaint_open,
                OPEN_COMPLAINT_EFFECT
                + OPEN_COMPLAINT_FRESH_EFFECT
                * np.exp(-open_age_weeks / OPEN_COMPLAINT_FRESH_WEEKS),
                0.0,
            )
            + DISENGAGEMENT_EFFECT * np.maximum(-p.engagement[at_risk], 0.0)
            + np.where(p.offer_until[at_risk] > week_start, OFFER_EFFECT, 0.0)
        )
        weeks = (week_end - week_start) / US_PER_WEEK
        decides = at_risk[rng.random(at_risk.size) < -np.expm1(-np.exp(log_hazard) * weeks)]
        notice = np.asarray(NOTICE_WEEKS)[_pick(rng, _cumulative(NOTICE_SHARE), decides.size)]
        p.notice_step[decides] = index + notice

        leaving_at = np.full(p.size, NEVER, dtype=np.int64)
        due = np.flatnonzero((p.status == 1) & (p.notice_step == index))
        leaving_at[due] = week_start + (rng.random(due.size) * (week_end - week_start)).astype(
            np.int64
        )
        return leaving_at

    # -- what happens during the week -------------------------------------------------------------

    def draw_interactions(self, week: _Week, recording: bool) -> tuple[F64, Mask]:
        """Draw the week's interactions (kept when ``recording``); return pain, who complained."""
        p, rng = self.population, self.rng
        who = week.subscribed
        seg = p.segment[who]
        grievance = np.minimum(p.grievance[who], 4.0)
        in_notice = p.notice_step[who] >= 0
        outage = np.zeros(who.size, dtype=np.bool_)
        if rng.random() < OUTAGE_PROBABILITY:
            hit = int(_pick(rng, _cumulative(COUNTRY_SHARE), 1)[0])
            outage = p.country[who] == hit

        rate = (
            np.asarray(WEEKLY_CONTACTS)[seg]
            * _season(week.start, 355, CONTACT_SEASON_AMPLITUDE)
            * (1.0 + 0.25 * grievance)
            * np.where(in_notice, NOTICE_CONTACT, 1.0)
            * np.where(outage, OUTAGE_CONTACTS, 1.0)
        )
        counts = rng.poisson(rate * week.exposure_length / US_PER_WEEK)
        local = np.repeat(np.arange(who.size), counts)
        m = local.size
        customer = who[local]
        opened = _times_within(rng, week.exposure_start[local], week.exposure_length[local])
        seg_i = seg[local]

        complaint_share = (
            COMPLAINT_SHARE
            + COMPLAINT_PER_GRIEVANCE * grievance[local]
            + np.where(outage[local], OUTAGE_COMPLAINTS, 0.0)
        )
        kind_weight = np.column_stack(
            [
                complaint_share,
                np.full(m, 1.0 - COMPLAINT_SHARE - REQUEST_SHARE - PRAISE_SHARE),
                REQUEST_SHARE + np.where(in_notice[local], NOTICE_EXTRA_REQUEST, 0.0),
                PRAISE_SHARE * np.exp(-grievance[local]),
            ]
        )
        kind = _pick_rows(rng, kind_weight)
        channel = _pick_rows(rng, self.channel_weight[seg_i, kind])
        public = self.public[channel]

        speed = np.asarray(SEGMENT_SPEED)[seg_i]
        median_s = np.asarray(FIRST_RESPONSE_MEDIAN_S)[channel] * speed
        delay_s = median_s * np.exp(np.asarray(FIRST_RESPONSE_SIGMA)[channel] * rng.normal(size=m))
        p_unanswered = np.minimum(
            np.asarray(UNANSWERED)[channel]
            * np.asarray(UNANSWERED_KIND)[kind]
            * np.asarray(SEGMENT_UNANSWERED)[seg_i],
            0.95,
        )
        answered = rng.random(m) >= p_unanswered
        first_response = opened + (delay_s * US_PER_SECOND).astype(np.int64)

        transfers = rng.poisson(
            np.asarray(TRANSFERS_MEAN)[channel] * np.asarray(TRANSFERS_KIND)[kind]
        )
        p_open = np.asarray(LEFT_OPEN)[kind] * np.where(public, LEFT_OPEN_PUBLIC, 1.0)
        resolved = answered & (rng.random(m) >= p_open)
        resolve_h = (
            np.asarray(RESOLVE_MEDIAN_H)[kind]
            * np.power(RESOLVE_PER_TRANSFER, transfers)
            * np.exp(np.asarray(RESOLVE_SIGMA)[kind] * rng.normal(size=m))
        )
        first_resolution = first_response + (resolve_h * US_PER_HOUR).astype(np.int64)
        p_reopen = np.minimum(
            np.asarray(REOPEN_BASE)[kind] + np.asarray(REOPEN_PER_TRANSFER)[kind] * transfers,
            REOPEN_MAX,
        )
        reopened = resolved & (rng.random(m) < p_reopen)
        reopen_h = REOPEN_MEDIAN_H * np.exp(0.8 * rng.normal(size=m))
        resolution = first_resolution + np.where(
            reopened, (reopen_h * US_PER_HOUR).astype(np.int64), 0
        )

        response_h = np.where(answered, delay_s / 3600.0, 0.0)
        satisfaction = (
            4.3
            - np.where(kind == COMPLAINT, 0.9, 0.0)
            + np.where(kind == PRAISE, 0.5, 0.0)
            - 0.3 * np.log1p(response_h)
            - 0.35 * transfers
            - 0.9 * reopened
            - 1.2 * ~answered
            - 0.15 * grievance[local]
            + rng.normal(0.0, 0.8, m)
        )
        surveyed = resolved & (rng.random(m) < CSAT_SURVEYED)
        csat = np.clip(np.rint(satisfaction), 1, 5).astype(np.int64)

        pain = (
            np.asarray(PAIN_KIND)[kind]
            + np.where(
                answered,
                np.asarray(PAIN_SLOW)[kind] * np.log1p(response_h),
                np.where(
                    public,
                    np.asarray(PAIN_UNANSWERED_PUBLIC)[kind],
                    np.asarray(PAIN_UNANSWERED)[kind],
                ),
            )
            + PAIN_TRANSFER * transfers
            + PAIN_REOPENED * reopened
            + PAIN_SATISFACTION * np.clip(3.5 - satisfaction, -1.0, 3.0)
        )
        pain_per_customer = np.bincount(local, weights=pain, minlength=who.size).astype(np.float64)

        is_complaint = kind == COMPLAINT
        open_until = np.where(resolved, resolution, NEVER)[is_complaint]
        complainers = customer[is_complaint]
        np.maximum.at(p.open_until, complainers, open_until)
        still_open = open_until > week.end
        np.maximum.at(p.open_since, complainers[still_open], opened[is_complaint][still_open])
        complained = np.bincount(local[is_complaint], minlength=who.size) > 0

        if not recording:
            return pain_per_customer, complained
        # What the warehouse knows at the end of the history.
        known_response = answered & (first_response < self.end)
        known_resolution = resolved & (resolution < self.end)
        self.interactions.add(
            customer=customer.astype(np.int32),
            opened_at=opened,
            channel=channel.astype(np.uint8),
            kind=kind.astype(np.uint8),
            first_response_at=np.where(known_response, first_response, NEVER),
            resolved_at=np.where(known_resolution, resolution, NEVER),
            transfers=transfers.astype(np.int16),
            reopened=reopened & (first_resolution < self.end),
            csat=np.where(surveyed & known_resolution, csat, 0).astype(np.uint8),
        )
        return pain_per_customer, complained

    def draw_activity(self, week: _Week, pain: F64, complained: Mask) -> None:
        p, rng = self.population, self.rng
        who = week.subscribed
        seg = p.segment[who]
        level = np.exp(p.habit[who] + p.engagement[who]) * np.where(
            p.notice_step[who] >= 0, NOTICE_ACTIVITY, 1.0
        )
        base = np.asarray(WEEKLY_EVENTS)[seg]
        rates = base.copy()
        rates[:, LOGIN] *= level
        rates[:, ORDER] *= level * (
            1.0
            + ORDER_PEAK * math.exp(-(((_day_of_year(week.start) - ORDER_PEAK_DAY) / 20.0) ** 2))
        )
        rates[:, REFUND] += complained * REFUND_PER_COMPLAINT
        rates[:, SUPPORT_VISIT] *= 1.0 + SUPPORT_VISIT_PER_PAIN * np.maximum(pain, 0.0)
        rates[:, REVIEW] *= np.sqrt(level)
        rates[:, REFERRAL] *= level * np.exp(-np.minimum(p.grievance[who], 4.0))

        counts = rng.poisson(rates.sum(axis=1) * week.exposure_length / US_PER_WEEK)
        local = np.repeat(np.arange(who.size), counts)
        event_type = _pick_rows(rng, rates[local])
        occurred = _times_within(rng, week.exposure_start[local], week.exposure_length[local])
        seg_i = seg[local]
        value = np.full(local.size, np.nan)
        orders = event_type == ORDER
        value[orders] = np.asarray(ORDER_MEDIAN)[seg_i[orders]] * np.exp(
            VALUE_SIGMA * rng.normal(size=int(orders.sum()))
        )
        refunds = event_type == REFUND
        value[refunds] = np.asarray(REFUND_MEDIAN)[seg_i[refunds]] * np.exp(
            VALUE_SIGMA * rng.normal(size=int(refunds.sum()))
        )
        order = np.argsort(occurred, kind="stable")
        self.activity.add(
            customer=who[local][order].astype(np.int32),
            occurred_at=occurred[order],
            event_type=event_type[order].astype(np.uint8),
            value=np.round(value[order], 2),
        )

    # -- state after the week ---------------------------------------------------------------------

    def update_experience(self, week: _Week, pain: F64) -> None:
        p, rng = self.population, self.rng
        who = week.subscribed
        weeks = week.weeks
        p.grievance[who] = np.maximum(
            p.grievance[who] * 0.5 ** (weeks / GRIEVANCE_HALF_LIFE_WEEKS) + pain, 0.0
        )
        drifting = p.drift_from[who] < week.end
        p.engagement_target[who] = np.where(
            drifting,
            np.maximum(p.engagement_target[who] - DRIFT_PER_WEEK * weeks, DRIFT_FLOOR),
            p.engagement_target[who],
        )
        engagement = p.engagement[who]
        p.engagement[who] = np.clip(
            engagement
            + ENGAGEMENT_REVERSION * weeks * (p.engagement_target[who] - engagement)
            + ENGAGEMENT_NOISE * math.sqrt(weeks) * rng.normal(size=who.size)
            - ENGAGEMENT_PAIN * np.maximum(pain, 0.0),
            -3.0,
            0.8,
        )

    def change_plans(self, week: _Week, staying: Mask) -> None:
        p, rng = self.population, self.rng
        who = week.subscribed[staying & (p.row_start[week.subscribed] < week.start)]
        who = who[p.notice_step[who] < 0]
        rank = p.plan_rank[who].astype(np.int64)
        down_rate = WEEKLY_DOWNGRADE * np.exp(
            DOWNGRADE_PER_GRIEVANCE * np.minimum(p.grievance[who], GRIEVANCE_CAP)
        )
        up_rate = WEEKLY_UPGRADE * np.exp(p.engagement[who]) * (p.grievance[who] < 0.5)
        u = rng.random(who.size)
        down = (rank > 0) & (u < -np.expm1(-down_rate * week.weeks))
        up = ~down & (rank < 2) & (u > 1.0 + np.expm1(-up_rate * week.weeks))
        moving = who[down | up]
        new_rank = np.where(down, rank - 1, rank + 1)[down | up]
        changed_at = week.start + (rng.random(moving.size) * (week.end - week.start)).astype(
            np.int64
        )
        self.subscriptions.add(
            customer=moving,
            started_at=p.row_start[moving],
            ended_at=changed_at,
            plan=p.segment[moving] * 3 + p.plan_rank[moving],
        )
        p.plan_rank[moving] = new_rank.astype(np.uint8)
        p.row_start[moving] = changed_at

    def retention_contacts(self, week: _Week, staying: Mask) -> None:
        p, rng = self.population, self.rng
        who = week.subscribed[staying]
        cooled = p.last_contact[who] < week.start - CONTACT_COOLDOWN_WEEKS * US_PER_WEEK
        who = who[cooled & (p.row_start[who] < week.start)]
        rate = (
            WEEKLY_CONTACT_BASE
            + WEEKLY_CONTACT_PER_GRIEVANCE
            * np.minimum(p.grievance[who], 5.0)
            * np.asarray(CONTACT_VALUE_WEIGHT)[p.segment[who]]
        )
        contacted = who[rng.random(who.size) < -np.expm1(-rate * week.weeks)]
        contacted_at = week.start + (rng.random(contacted.size) * (week.end - week.start)).astype(
            np.int64
        )
        outcome = _pick(rng, _cumulative(OUTCOME_SHARE), contacted.size)
        accepted = outcome == OUTCOMES.index("offer_accepted")
        unrecorded = rng.random(contacted.size) < OUTCOME_UNRECORDED
        self.contacts.add(
            customer=contacted.astype(np.int32),
            contacted_at=contacted_at,
            outcome=np.where(unrecorded, len(OUTCOMES), outcome).astype(np.uint8),
        )
        p.last_contact[contacted] = contacted_at
        saved = contacted[accepted]
        p.offer_until[saved] = contacted_at[accepted] + OFFER_WEEKS * US_PER_WEEK
        p.grievance[saved] *= 0.6
        in_notice = saved[p.notice_step[saved] > week.index]
        p.notice_step[in_notice[rng.random(in_notice.size) < SAVED_FROM_NOTICE]] = -1

    def close_open_rows(self) -> None:
        p = self.population
        open_rows = np.flatnonzero(p.status == 1)
        self.subscriptions.add(
            customer=open_rows,
            started_at=p.row_start[open_rows],
            ended_at=np.full(open_rows.size, NEVER, dtype=np.int64),
            plan=p.segment[open_rows] * 3 + p.plan_rank[open_rows],
        )

    # -- frames -----------------------------------------------------------------------------------

    def frames(self) -> dict[str, pl.DataFrame]:
        return {
            "customers": self.customers_frame(),
            "subscriptions": self.subscriptions_frame(),
            "interactions": self.interactions_frame(),
            "activity": self.activity_frame(),
            "retention_contacts": self.contacts_frame(),
        }

    def customers_frame(self) -> pl.DataFrame:
        p, rng = self.population, self.rng
        n = p.size
        index = np.arange(n, dtype=np.int64)
        main = np.asarray([LANGUAGES.index(x) for x in LANGUAGE_MAIN])[p.country]
        other = np.asarray([LANGUAGES.index(x) for x in LANGUAGE_OTHER])[p.country]
        language = np.where(rng.random(n) < SHARE_OTHER_LANGUAGE, other, main)
        value = (
            self.prices[p.segment, p.signup_plan_rank]
            * (1.0 - p.discount)
            * np.exp(rng.normal(0.15, 0.3, n))
        )
        frame = pl.DataFrame(
            {
                "customer_id": index + FIRST_CUSTOMER_ID,
                "signup_at": _timestamps(p.signup),
                "segment": _labels(SEGMENTS, p.segment),
                "country": _labels(COUNTRIES, p.country),
                "language": _labels(LANGUAGES, language, rng.random(n) < SHARE_LANGUAGE_UNKNOWN),
                "monthly_value": np.round(value, 2),
            }
        )
        return _conform("customers", frame)

    def subscriptions_frame(self) -> pl.DataFrame:
        s = self.subscriptions
        customer = s.concat("customer", np.int64)
        plan = s.concat("plan", np.int64)
        ended = s.concat("ended_at", np.int64)
        discount = self.population.discount[customer]
        prices = self.prices.reshape(-1)
        names = tuple(name for ladder in PLANS for name, _ in ladder)
        frame = pl.DataFrame(
            {
                "customer_id": customer + FIRST_CUSTOMER_ID,
                "started_at": _timestamps(s.concat("started_at", np.int64)),
                "ended_at": _timestamps(ended, ended == NEVER),
                "plan": _labels(names, plan),
                "mrr": np.round(prices[plan] * (1.0 - discount), 2),
            }
        )
        return _conform("subscriptions", frame.sort("customer_id", "started_at"))

    def interactions_frame(self) -> pl.DataFrame:
        s = self.interactions
        customer = s.concat("customer", np.int64)
        opened = s.concat("opened_at", np.int64)
        order = np.lexsort((customer, opened))
        customer, opened = customer[order], opened[order]
        channel = s.concat("channel", np.uint8)[order]
        response = s.concat("first_response_at", np.int64)[order]
        resolution = s.concat("resolved_at", np.int64)[order]
        csat = s.concat("csat", np.uint8)[order].astype(np.int64)
        frame = pl.DataFrame(
            {
                "interaction_id": np.arange(1, customer.size + 1, dtype=np.int64),
                "customer_id": customer + FIRST_CUSTOMER_ID,
                "opened_at": _timestamps(opened),
                "channel": _labels(CHANNELS, channel),
                "kind": _labels(KINDS, s.concat("kind", np.uint8)[order]),
                "is_public": self.public[channel],
                "first_response_at": _timestamps(response, response == NEVER),
                "resolved_at": _timestamps(resolution, resolution == NEVER),
                "transfers": s.concat("transfers", np.int64)[order],
                "reopened": s.concat("reopened", np.bool_)[order],
                "csat": pl.Series(csat).set(pl.Series(csat == 0), None),
            }
        )
        return _conform("interactions", frame)

    def activity_frame(self) -> pl.DataFrame:
        s = self.activity
        customer = s.concat("customer", np.int64) + FIRST_CUSTOMER_ID
        occurred = _timestamps(s.concat("occurred_at", np.int64))
        event_type = _labels(EVENT_TYPES, s.concat("event_type", np.uint8))
        value = pl.Series(s.concat("value", np.float64)).fill_nan(None)
        frame = pl.DataFrame(
            {
                "customer_id": customer,
                "occurred_at": occurred,
                "event_type": event_type,
                "value": value,
            }
        )
        return _conform("activity", frame)

    def contacts_frame(self) -> pl.DataFrame:
        s = self.contacts
        customer = s.concat("customer", np.int64)
        contacted = s.concat("contacted_at", np.int64)
        outcome = s.concat("outcome", np.uint8)
        order = np.lexsort((customer, contacted))
        frame = pl.DataFrame(
            {
                "customer_id": customer[order] + FIRST_CUSTOMER_ID,
                "contacted_at": _timestamps(contacted[order]),
                "outcome": _labels(OUTCOMES, outcome[order], outcome[order] == len(OUTCOMES)),
            }
        )
        return _conform("retention_contacts", frame)


def _timestamps(micros: I64, missing: Mask | None = None) -> pl.Series:
    series = pl.Series(micros).cast(pl.Datetime("us", "UTC"))
    return series if missing is None else series.set(pl.Series(missing), None)


def _labels(names: tuple[str, ...], codes: NDArray[Any], missing: Mask | None = None) -> pl.Series:
    safe = np.where(missing, 0, codes) if missing is not None else codes
    series = pl.Series(names).gather(pl.Series(safe.astype(np.uint32)))
    return series if missing is None else series.set(pl.Series(missing), None)


def _conform(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Select and cast to exactly the contract schema of ``table``."""
    schema = contract_schema(table)
    return frame.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])


def generate_demo(n_customers: int, days: int, seed: int, end: date) -> dict[str, pl.DataFrame]:
    """Simulate a realistic warehouse: the five source tables over ``days`` days before ``end``.

    History covers ``[end - days, end)`` in UTC (the last moment is the day before ``end``,
    23:59:59). Returns frames keyed by logical table name (``customers``, ``subscriptions``,
    ``interactions``, ``activity``, ``retention_contacts``), each with exactly the contract schema
    of :func:`warehouse.schema.contract_schema`. The same arguments always give the same frames.
    """
    if n_customers < 1:
        raise ValueError(f"n_customers must be at least 1, got {n_customers}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    simulation = _Simulation(n_customers, days, seed, end)
    simulation.run()
    return simulation.frames()


class WarehouseNotEmptyError(RuntimeError):
    """Demo data is only ever loaded into empty source tables."""


def _check_frames(frames: dict[str, pl.DataFrame]) -> None:
    missing = [name for name in SOURCE_TABLES if name not in frames]
    if missing:
        raise ValueError(f"demo frames lack the table(s) {', '.join(missing)}")
    for name in SOURCE_TABLES:
        expected = contract_schema(name)
        actual = frames[name].schema
        if actual != expected:
            wrong = [
                f"{column} ({actual.get(column)} instead of {dtype})"
                for column, dtype in expected.items()
                if actual.get(column) != dtype
            ]
            extra = [column for column in actual.names() if column not in expected]
            detail = "; ".join(
                part
                for part in (
                    "columns " + ", ".join(wrong) if wrong else "",
                    "unexpected columns " + ", ".join(extra) if extra else "",
                    "column order differs" if not wrong and not extra else "",
                )
                if part
            )
            raise ValueError(
                f"demo frame {name} ({frames[name].height} rows) does not match the contract: "
                f"{detail}"
            )


def _row_count(conn: sa.Connection, table: sa.Table) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def load_demo(engine: sa.Engine, wh: Warehouse, frames: dict[str, pl.DataFrame]) -> dict[str, int]:
    """Write demo frames into the warehouse's source tables; return rows written per table.

    Creates the source tables when they are missing. Raises :class:`WarehouseNotEmptyError`
    (naming each table and its row count) when any source table already holds rows, and
    ``ValueError`` when a frame does not have exactly its contract schema. Each table is
    bulk-loaded and committed in turn; if one fails, the error names the tables already loaded.
    """
    from warehouse.io import bulk_load
    from warehouse.migrate import create_source_indexes, create_source_tables

    _check_frames(frames)
    # Secondary indexes are built after the load: several times faster than loading into them.
    create_source_tables(engine, wh, indexes=False)
    with engine.connect() as conn:
        occupied = {
            table.fullname: count
            for table in wh.sources.values()
            if (count := _row_count(conn, table)) > 0
        }
    if occupied:
        listed = ", ".join(f"{name} ({count:,} rows)" for name, count in occupied.items())
        raise WarehouseNotEmptyError(
            f"refusing to load demo data into a warehouse that already has source rows: {listed}; "
            "use an empty database or empty those tables first"
        )
    written: dict[str, int] = {}
    for name in SOURCE_TABLES:
        table = wh[name]
        try:
            written[name] = bulk_load(engine, table, frames[name])
        except Exception as exc:
            done = ", ".join(wh[n].fullname for n in written) or "none"
            raise RuntimeError(
                f"loading {frames[name].height:,} demo rows into {table.fullname} failed "
                f"(tables already loaded: {done}): {exc}"
            ) from exc
    create_source_indexes(engine, wh)
    _settle(engine, wh)
    return written


def _settle(engine: sa.Engine, wh: Warehouse) -> None:
    """Planner statistics (and on PostgreSQL, a vacuum) for the freshly loaded source tables,
    so the first queries meet the tables as a maintained warehouse keeps them."""
    preparer = engine.dialect.identifier_preparer
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in wh.sources.values():
                conn.exec_driver_sql(f"VACUUM (ANALYZE) {preparer.format_table(table)}")
    elif engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            for table in wh.sources.values():
                conn.exec_driver_sql(f"ANALYZE {preparer.format_table(table)}")


def _month_starts(first: date, last: date) -> list[date]:
    """First days of the months whose start lies in ``[first, last]``."""
    month = date(first.year, first.month, 1)
    if month < first:
        month = _next_month(month)
    starts: list[date] = []
    while month <= last:
        starts.append(month)
        month = _next_month(month)
    return starts


def _next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def _subscribed_at(subscriptions: pl.DataFrame, moment: datetime) -> pl.Series:
    covering = (pl.col("started_at") <= moment) & (
        pl.col("ended_at").is_null() | (pl.col("ended_at") > moment)
    )
    return subscriptions.filter(covering).get_column("customer_id").unique()


def monthly_churn_rates(subscriptions: pl.DataFrame, first: date, last: date) -> dict[str, float]:
    """Per calendar month: the share of its first day's subscribers not subscribed a month later.

    ``subscriptions`` has ``customer_id``, ``started_at`` and ``ended_at`` (null: still open).
    Counts the months that begin on or after ``first`` and end on or before ``last`` (midnight
    UTC), keyed ``YYYY-MM``; a month that starts with no subscriber is left out.
    """
    starts = _month_starts(first, last)
    moments = [datetime(d.year, d.month, d.day, tzinfo=UTC) for d in starts]
    rates: dict[str, float] = {}
    for month, (begin, finish) in enumerate(itertools.pairwise(moments)):
        before = _subscribed_at(subscriptions, begin)
        if before.len() == 0:
            continue
        after = _subscribed_at(subscriptions, finish)
        left = int((~before.is_in(after.implode())).sum())
        rates[starts[month].strftime("%Y-%m")] = left / before.len()
    return rates


def warehouse_summary(engine: sa.Engine, wh: Warehouse) -> dict[str, Any]:
    """What the source tables hold: rows per table, the history's dates, subscribers, churn.

    ``history_from``/``history_to`` span the interactions and activity events;
    ``subscribed_at_end`` counts customers subscribed at the last event; ``monthly_churn``
    gives the share of subscribers at each month start who were gone a month later (complete
    months only) and ``mean_monthly_churn`` their mean.
    """
    from warehouse.io import read_frame

    with engine.connect() as conn:
        rows = {name: _row_count(conn, table) for name, table in wh.sources.items()}

    bounds_schema = pl.Schema({"first": pl.Datetime("us", "UTC"), "last": pl.Datetime("us", "UTC")})
    firsts: list[datetime] = []
    lasts: list[datetime] = []
    for name, column in (("interactions", "opened_at"), ("activity", "occurred_at")):
        moment = wh[name].c[column]
        query = sa.select(sa.func.min(moment).label("first"), sa.func.max(moment).label("last"))
        bounds = read_frame(engine, query, bounds_schema)
        if bounds.height and bounds["first"][0] is not None:
            firsts.append(bounds["first"][0])
            lasts.append(bounds["last"][0])

    summary: dict[str, Any] = {"rows": rows}
    if not firsts:
        summary.update(history_from=None, history_to=None, subscribed_at_end=0, monthly_churn={})
        summary["mean_monthly_churn"] = None
        return summary

    first, last = min(firsts), max(lasts)
    table = wh["subscriptions"]
    contract = contract_schema("subscriptions")
    subscriptions = read_frame(
        engine,
        sa.select(table.c.customer_id, table.c.started_at, table.c.ended_at),
        pl.Schema({name: contract[name] for name in ("customer_id", "started_at", "ended_at")}),
    )
    churn = monthly_churn_rates(subscriptions, first.date(), last.date() + timedelta(days=1))
    summary.update(
        history_from=first.date().isoformat(),
        history_to=last.date().isoformat(),
        subscribed_at_end=int(_subscribed_at(subscriptions, last).len()),
        monthly_churn={month: round(rate, 4) for month, rate in churn.items()},
        mean_monthly_churn=round(sum(churn.values()) / len(churn), 4) if churn else None,
    )
    return summary
