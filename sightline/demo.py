"""Deterministic demo data: three months of a made-up SaaS product, as the PostHog SDKs send it.

``sightline demo`` feeds :func:`generate` into the ingestion pipeline, so that a new user's first
look at Sightline shows real-looking funnels, retention curves, weekly seasonality, breakdowns and
an experiment with a known result.

The product is **Acme**, a project-management tool. Its marketing site (``acme.io``) and its web
app (``app.acme.io``) use posthog-js; its backend uses posthog-python. The story:

* Anonymous visitors arrive all through the period: weekdays busier than weekends, a mild growth
  trend, a Product Hunt launch spike, and an hour-of-day curve in each visitor's own time zone.
  Each has a device (browser, OS, device type, screen), a country and an entry source (Google
  organic or ads, newsletter, Twitter, Product Hunt, Hacker News, GitHub, LinkedIn, direct…).
* Visitor → ``signed_up`` (about 11% of new visitors, 13–14% of all counting the invited
  teammates; an ``$identify`` merges the anonymous id into ``user_<n>``) → ``project_created``
  (activation, ~60%) → ``invited_teammate`` (~30%; invitees arrive and sign up into the same
  company) → ``purchase`` (about 8–12% of sign-ups, ``amount`` and ``revenue`` of 29/99/299 per
  plan). Conversion depends on source, browser, device and country so that breakdowns are
  interesting.
* Signed-up users come back on later days with a decaying curve that flattens into a plateau,
  higher for activated users; churned users stop; some paying users send
  ``subscription_cancelled``. Paying users get a monthly ``invoice_paid`` from the backend, and
  API users make ``api_request`` calls (``endpoint``, ``duration_ms``).
* Experiment: the multivariate flag ``new-checkout`` (``control``/``test``, 50/50 by PostHog's own
  flag hash of the user id, so Sightline's flag evaluation agrees with the data) is exposed with
  ``$feature_flag_called`` on the billing page; ``test`` users purchase ~20% more often
  (:data:`CHECKOUT_TEST_LIFT`). The boolean flag ``dark-mode`` (30% rollout) is exposed on app load.
* Every event of a signed-up user carries ``$groups: {"company": <domain>}``; companies are
  described with ``$groupidentify`` (name, industry, employees, plan).
* A few anonymous visitors come from a page that runs posthog-js in ``identified_only`` mode:
  their events carry ``$process_person_profile: false``.

Event shapes follow ``shared/specs/posthog-wire.md`` §2.4 and the real SDKs: posthog-js puts the
``$identify`` person updates in top-level ``$set``/``$set_once`` (the capture options), with
``properties.distinct_id`` = the new id and ``properties.$anon_distinct_id`` = the old one;
posthog-python's ``set()`` sends a ``$set`` event with a top-level ``$set``. Nested values such
as ``$groups`` may be shared between events: treat the yielded events as read-only.

Everything is drawn from ``random.Random`` instances seeded from ``seed``; the same
``(n_events, seed, end, days)`` gives identical output, uuids included.

How it is built: the range is cut into UTC calendar days. Each day has a heap of work items
(a new visitor's arrival, a returning user's session, an anonymous revisit, an invitee, an
invoice), run in start order; running one emits its events into 10-minute slots and may
schedule later items. A slot is handed out (sorted) as soon as the next item starts after it,
since nothing can land before its own start. The number of new visitors per day follows the
seasonality and is scaled by a controller so that exactly ``n_events`` come out with the range
covered: it predicts the events still to come from a per-visitor activity curve measured once
per process (:func:`_calibration`, fixed seed) and corrects with what actually happened. The
last day makes up any shortfall; a surplus is cut from the end.
"""

from __future__ import annotations

import gc
import hashlib
import math
import random
from datetime import datetime, timedelta, timezone
from heapq import heapify, heappop, heappush
from operator import itemgetter
from statistics import NormalDist
from typing import Iterator

__all__ = ["generate", "checkout_variant", "dark_mode_enabled", "flag_hash",
           "EXPERIMENT_FLAG", "DARK_MODE_FLAG", "PLAN_PRICES"]

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
SLOT_MS = 600_000                    # output granularity: events are sorted and handed out
SLOTS_PER_DAY = DAY_MS // SLOT_MS    # ten minutes at a time
MINUTE_MS = 60_000

# ---------------------------------------------------------------------------------------------
# The product
# ---------------------------------------------------------------------------------------------
MARKETING_HOST = "acme.io"
APP_HOST = "app.acme.io"
WEB_LIB_VERSION = "1.300.0"          # posthog-js
PYTHON_LIB_VERSION = "7.42.0"        # posthog-python

PLAN_PRICES = {"starter": 29, "pro": 99, "business": 299}   # USD per month
PLAN_SHARES = {"starter": 0.45, "pro": 0.40, "business": 0.15}

EXPERIMENT_FLAG = "new-checkout"     # multivariate, variants below, 50/50
EXPERIMENT_VARIANTS = ("control", "test")
CHECKOUT_TEST_LIFT = 1.20            # the true effect: "test" purchases 20% more often
DARK_MODE_FLAG = "dark-mode"         # boolean
DARK_MODE_ROLLOUT = 0.30

# ---------------------------------------------------------------------------------------------
# Traffic volume and seasonality
# ---------------------------------------------------------------------------------------------
WEEKDAY_WEIGHTS = (1.00, 1.06, 1.04, 1.00, 0.88, 0.50, 0.56)   # Mon..Sun, visitor arrivals
GROWTH_PER_DAY = 0.005               # ~ +57% over 90 days
DAILY_NOISE = 0.08                   # lognormal sigma of day-to-day volume noise
LAUNCH_AT = 0.62                     # Product Hunt launch: this far into the range (a Tuesday)
LAUNCH_BOOST = (2.4, 1.5, 1.15)      # visitor multiplier on launch day and the days after
LAUNCH_PH_SHARE = (0.55, 0.35, 0.15)  # share of those days' visitors that come from Product Hunt
MIN_DAYS_FOR_LAUNCH = 21

# Local hour-of-day activity (0..23). Visitors act in their own time zone.
HOUR_WEIGHTS = (0.16, 0.10, 0.07, 0.06, 0.07, 0.14, 0.30, 0.55, 0.85, 1.05, 1.15, 1.15,
                1.05, 1.10, 1.15, 1.12, 1.02, 0.88, 0.72, 0.68, 0.66, 0.56, 0.40, 0.26)

# ---------------------------------------------------------------------------------------------
# Funnel and retention
# ---------------------------------------------------------------------------------------------
SIGNUP_RATE = 0.105                  # average over first-time visitors (multipliers normalised)
SIGNUP_ON_FIRST_VISIT = 0.72         # the rest sign up on a later anonymous visit
ANON_RETURN_RATE = 0.18              # non-signers that come back once more, anonymously
PERSONLESS_SHARE = 0.07              # anonymous visitors seen through identified_only pages
ACTIVATION_RATE = 0.62               # signed_up -> project_created
ACTIVATE_IN_FIRST_SESSION = 0.70
INVITEE_ACTIVATION_RATE = 0.45       # invitees join a project; some also create one
INVITE_RATE_ACTIVATED = 0.50         # -> invited_teammate
INVITE_RATE_OTHER = 0.06
INVITE_ACCEPT_RATE = 0.55            # invitee shows up and signs up into the same company
BILLING_VIEW_ACTIVATED = 0.65        # goes to the checkout meaning to buy (exposure)
BILLING_VIEW_OTHER = 0.05
PURCHASE_GIVEN_CHECKOUT = 0.31       # control; x CHECKOUT_TEST_LIFT for test
PURCHASE_GIVEN_CHECKOUT_NOT_ACTIVATED = 0.15
BILLING_REVISIT = 0.30               # non-buyers who come back to the checkout later
CANCEL_RATE = 0.22                   # paying users that cancel (subscription_cancelled)
KEEP_RATE_ACTIVATED = 0.45           # long-term users (the retention plateau)
KEEP_RATE_OTHER = 0.12
KEEP_RATE_INVITEE = 0.40
KEEPER_MEAN_LIFE_DAYS = 240.0        # even long-term users churn, slowly
CHURNER_MEAN_LIFE_DAYS = 5.0         # the others stop after a few days
VISIT_P_KEEPER = (0.22, 0.70)        # daily visit probability range (weekday), long-term users
VISIT_P_CHURNER = (0.30, 0.60)
WEEKEND_VISIT_FACTOR = 0.30
FIRST_WEEK_VISIT_BOOST = 1.35
API_USER_RATE = 0.45                 # activated users whose integrations call the API
API_CALLS_PER_SESSION = (3, 16)      # uniform range of api_request events around a session
SECOND_DEVICE_RATE = 0.10            # app sessions on another device (login + $identify)

# Session shape
MARKETING_CONTINUE = 0.55            # probability of one more marketing page
APP_CONTINUE = 0.62                  # probability of one more app page
MAX_PAGES = 9
PAGE_GAP_MEDIAN_S = 28.0             # seconds between pageviews (lognormal)
PAGE_GAP_SIGMA = 0.85
CLICK_RATE = 0.40                    # $autocapture click on a page
PAGELEAVE_RATE = 0.30                # $pageleave on a page (more on the last one)

# ---------------------------------------------------------------------------------------------
# Visitor attributes. Each table row: (..., share, ...)
# ---------------------------------------------------------------------------------------------
# code, name, continent, share, signup mult, purchase mult, language, [(utc offset h, tz)], cities
COUNTRIES = (
    ("US", "United States", "NA", 0.32, 1.10, 1.30, "en-US",
     ((-5, "America/New_York"), (-6, "America/Chicago"), (-8, "America/Los_Angeles")),
     ("New York", "San Francisco", "Austin", "Chicago", "Seattle", "Boston", "Denver")),
    ("GB", "United Kingdom", "EU", 0.08, 1.05, 1.10, "en-GB", ((0, "Europe/London"),),
     ("London", "Manchester", "Edinburgh", "Bristol")),
    ("DE", "Germany", "EU", 0.07, 1.00, 1.10, "de-DE", ((1, "Europe/Berlin"),),
     ("Berlin", "Munich", "Hamburg", "Cologne")),
    ("IN", "India", "AS", 0.09, 0.70, 0.45, "en-IN", ((5, "Asia/Kolkata"),),
     ("Bengaluru", "Mumbai", "Delhi", "Pune", "Hyderabad")),
    ("FR", "France", "EU", 0.045, 0.95, 1.00, "fr-FR", ((1, "Europe/Paris"),),
     ("Paris", "Lyon", "Toulouse")),
    ("BR", "Brazil", "SA", 0.045, 0.85, 0.60, "pt-BR", ((-3, "America/Sao_Paulo"),),
     ("São Paulo", "Rio de Janeiro", "Belo Horizonte")),
    ("CA", "Canada", "NA", 0.045, 1.05, 1.20, "en-CA",
     ((-5, "America/Toronto"), (-8, "America/Vancouver")), ("Toronto", "Vancouver", "Montreal")),
    ("NL", "Netherlands", "EU", 0.03, 1.10, 1.15, "nl-NL", ((1, "Europe/Amsterdam"),),
     ("Amsterdam", "Rotterdam", "Utrecht")),
    ("AU", "Australia", "OC", 0.03, 1.00, 1.15, "en-AU", ((10, "Australia/Sydney"),),
     ("Sydney", "Melbourne", "Brisbane")),
    ("ES", "Spain", "EU", 0.025, 0.90, 0.85, "es-ES", ((1, "Europe/Madrid"),),
     ("Madrid", "Barcelona", "Valencia")),
    ("JP", "Japan", "AS", 0.02, 0.80, 1.00, "ja-JP", ((9, "Asia/Tokyo"),), ("Tokyo", "Osaka")),
    ("PL", "Poland", "EU", 0.02, 0.95, 0.80, "pl-PL", ((1, "Europe/Warsaw"),),
     ("Warsaw", "Kraków", "Wrocław")),
    ("SE", "Sweden", "EU", 0.015, 1.05, 1.10, "sv-SE", ((1, "Europe/Stockholm"),),
     ("Stockholm", "Gothenburg")),
    ("SG", "Singapore", "AS", 0.015, 1.00, 1.10, "en-SG", ((8, "Asia/Singapore"),),
     ("Singapore",)),
    ("NG", "Nigeria", "AF", 0.015, 0.70, 0.50, "en-NG", ((1, "Africa/Lagos"),), ("Lagos", "Abuja")),
)

# os, os versions, device type, share, [(browser, share, versions, signup mult)], screens
_DESKTOP_SCREENS = ((1920, 1080), (1536, 864), (2560, 1440), (1440, 900), (1366, 768), (1728, 1117))
_PHONE_SCREENS = ((390, 844), (393, 852), (414, 896), (412, 915), (360, 800), (430, 932))
_TABLET_SCREENS = ((820, 1180), (768, 1024), (800, 1280), (1024, 1366))
PLATFORMS = (
    ("Windows", ("10.0",), "Desktop", 0.36,
     (("Chrome", 0.68, (139, 140, 141), 1.00), ("Microsoft Edge", 0.22, (140, 141), 0.85),
      ("Firefox", 0.10, (142, 143), 1.25)), _DESKTOP_SCREENS),
    ("Mac OS X", ("10.15.7",), "Desktop", 0.25,
     (("Chrome", 0.55, (139, 140, 141), 1.10), ("Safari", 0.35, (18.6, 26.0), 1.05),
      ("Firefox", 0.10, (142, 143), 1.25)), _DESKTOP_SCREENS),
    ("Linux", ("",), "Desktop", 0.04,
     (("Chrome", 0.55, (140, 141), 1.15), ("Firefox", 0.45, (142, 143), 1.30)), _DESKTOP_SCREENS),
    ("iOS", ("18.6", "26.0", "17.7"), "Mobile", 0.17,
     (("Mobile Safari", 0.82, (18.6, 26.0), 0.50), ("Chrome iOS", 0.18, (140, 141), 0.55)),
     _PHONE_SCREENS),
    ("iOS", ("18.6", "26.0"), "Tablet", 0.03,
     (("Mobile Safari", 0.90, (18.6, 26.0), 0.80), ("Chrome iOS", 0.10, (140, 141), 0.80)),
     _TABLET_SCREENS),
    ("Android", ("15.0", "14.0", "13.0"), "Mobile", 0.13,
     (("Chrome", 0.75, (140, 141), 0.50), ("Samsung Internet", 0.20, (28.0, 27.0), 0.40),
      ("Firefox", 0.05, (143,), 0.60)), _PHONE_SCREENS),
    ("Android", ("15.0", "14.0"), "Tablet", 0.02,
     (("Chrome", 0.85, (140, 141), 0.75), ("Samsung Internet", 0.15, (28.0,), 0.70)),
     _TABLET_SCREENS),
)

# Entry sources: key, share, referrer URL ("$direct" for none), utm (source, medium, campaigns)
# or None, landing pages [(path, weight)], signup mult, purchase mult
_BLOG = "/blog/*"
_DOCS = "/docs/*"
SOURCES = (
    ("direct", 0.28, "$direct", None,
     (("/", 7), ("/pricing", 1.5), (_DOCS, 1.5)), 1.20, 1.10),
    ("google", 0.21, "https://www.google.com/", None,
     ((_BLOG, 5.5), ("/", 2.5), (_DOCS, 2)), 0.95, 1.00),
    ("google_ads", 0.10, "https://www.google.com/",
     ("google", "cpc", ("brand-search", "analytics-tool", "competitor-alternative")),
     (("/", 5), ("/pricing", 3), ("/features", 2)), 0.90, 1.30),
    ("newsletter", 0.07, "$direct",
     ("newsletter", "email", ("weekly-digest", "product-update", "case-study")),
     ((_BLOG, 8), ("/changelog", 2)), 1.45, 1.10),
    ("twitter", 0.06, "https://t.co/",
     ("twitter", "social", ("launch-thread", "tips-thread")), ((_BLOG, 6), ("/", 4)), 0.65, 0.70),
    ("producthunt", 0.03, "https://www.producthunt.com/",
     ("producthunt", "referral", ("launch",)), (("/", 1),), 1.30, 0.75),
    ("hackernews", 0.05, "https://news.ycombinator.com/", None,
     ((_BLOG, 7), ("/", 3)), 1.05, 0.80),
    ("github", 0.04, "https://github.com/", None, ((_DOCS, 7), ("/", 3)), 1.40, 0.90),
    ("linkedin", 0.05, "https://www.linkedin.com/",
     ("linkedin", "social", ("founder-post", "hiring-pm")), ((_BLOG, 5), ("/", 5)), 0.80, 1.10),
    ("bing", 0.03, "https://www.bing.com/", None, ((_BLOG, 5), ("/", 3), (_DOCS, 2)), 0.95, 1.00),
    ("duckduckgo", 0.02, "https://duckduckgo.com/", None, ((_DOCS, 5), (_BLOG, 5)), 1.10, 0.90),
    ("chatgpt", 0.02, "https://chatgpt.com/", ("chatgpt.com", "", ()), (("/", 5), ("/pricing", 3)),
     1.15, 1.05),
)
RETURN_SOURCES = (("direct", 0.60), ("google", 0.25), ("newsletter", 0.15))
APP_RETURN_SOURCES = (("direct", 0.82), ("notification", 0.13), ("google", 0.05))
DEVICE_PURCHASE_MULT = {"Desktop": 1.1, "Mobile": 0.55, "Tablet": 0.8}

MARKETING_NEXT = (("/", 2), ("/pricing", 3.5), ("/features", 2), (_BLOG, 2.5), (_DOCS, 2.5),
                  ("/customers", 1), ("/about", 0.5), ("/changelog", 0.6), ("/blog", 0.8))
BLOG_SLUGS = ("product-analytics-101", "how-we-cut-churn-in-half", "funnels-explained",
              "retention-curves-for-founders", "ab-testing-pitfalls", "self-hosting-analytics",
              "feature-flags-best-practices", "weekly-active-users-is-a-trap",
              "north-star-metrics", "from-spreadsheet-to-roadmap", "remote-team-rituals",
              "kanban-vs-scrum")
DOCS_PAGES = ("getting-started", "install/javascript", "install/python", "projects",
              "integrations/slack", "integrations/github", "api/overview", "api/tasks",
              "webhooks", "sso")
APP_NEXT = (("project", 5.0), ("task", 2.5), ("projects", 1.0), ("dashboard", 1.2),
            ("reports", 0.9), ("team", 0.4), ("settings", 0.5), ("billing", 0.10),
            ("integrations", 0.35))
API_ENDPOINTS = (("GET", "/api/projects", 3, 35), ("GET", "/api/projects/:id/tasks", 5, 60),
                 ("POST", "/api/tasks", 3, 80), ("PATCH", "/api/tasks/:id", 2, 70),
                 ("GET", "/api/reports/velocity", 1, 420), ("POST", "/api/webhooks/github", 2, 25))
API_STATUS = ((200, 0.90), (201, 0.05), (400, 0.02), (404, 0.02), (429, 0.005), (500, 0.005))

FIRST_NAMES = ("Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Sophia", "Lucas", "Mia",
               "Mateo", "Amelia", "James", "Harper", "Benjamin", "Evelyn", "Leo", "Priya",
               "Arjun", "Chloé", "Lukas", "Hannah", "Jonas", "Sofia", "Gabriel", "Yuki",
               "Kenji", "Ana", "Pedro", "Zara", "Omar", "Fatima", "Daniel", "Grace", "Ethan",
               "Isla", "Noor", "Ines", "Tomás", "Maja", "Felix")
LAST_NAMES = ("Smith", "Johnson", "Garcia", "Müller", "Martin", "Brown", "Patel", "Sharma",
              "Silva", "Santos", "Kowalski", "Nguyen", "Kim", "Tanaka", "Dubois", "Rossi",
              "Andersson", "de Vries", "Wilson", "Taylor", "Chen", "Okafor", "Cohen", "López",
              "Schneider", "Novak", "Walker", "Hughes", "Murphy", "Singh")
COMPANY_WORDS = ("North", "Bright", "Blue", "Iron", "Quiet", "Rapid", "Lumen", "Cedar", "Nimbus",
                 "Pixel", "Orbit", "Harbor", "Maple", "Vector", "Summit", "Atlas", "Copper",
                 "Nova", "Tidal", "Granite", "Echo", "Falcon", "Juniper", "Kite", "Meadow",
                 "Onyx", "Prism", "Quill", "Sparrow", "Willow")
COMPANY_SUFFIXES = ("Labs", "HQ", "Systems", "Analytics", "Cloud", "Works", "Studio", "AI",
                    "Health", "Pay", "Logistics", "Media", "Robotics", "Foods", "Learning")
COMPANY_TLDS = (".com", ".io", ".co", ".ai", ".dev")
INDUSTRIES = ("SaaS", "E-commerce", "Fintech", "Healthcare", "Education", "Media",
              "Marketing agency", "Logistics", "Gaming", "Non-profit")
EMPLOYEE_BUCKETS = (((2, 10), 0.40), ((11, 50), 0.30), ((51, 200), 0.18), ((201, 1000), 0.09),
                    ((1001, 5000), 0.03))
PYTHON_CONTEXT = {"$python_runtime": "CPython", "$python_version": "3.12.7", "$os": "Linux",
                  "$os_version": "6.8.0-1021-aws", "$geoip_disable": True}

# Calibration of events per visitor (see _calibration): fixed, independent of the caller's seed.
CAL_SEED = 20_240_101
CAL_VISITORS_PER_WEEKDAY = 300
CAL_MAX_DAYS = 120
RECENT_DAYS = 14                     # the volume controller's memory

# ---------------------------------------------------------------------------------------------
# Feature-flag hashing (PostHog's: spec §5.1), so the server's evaluation matches the data
# ---------------------------------------------------------------------------------------------


def flag_hash(key: str, distinct_id: str, salt: str = "") -> float:
    digest = hashlib.sha1(f"{key}.{distinct_id}{salt}".encode("utf-8")).hexdigest()
    return int(digest[:15], 16) / 0xFFFFFFFFFFFFFFF


def checkout_variant(distinct_id: str) -> str:
    """The ``new-checkout`` variant of a user: 50% control, 50% test (PostHog variant hash)."""
    return EXPERIMENT_VARIANTS[0] if flag_hash(EXPERIMENT_FLAG, distinct_id, "variant") < 0.5 \
        else EXPERIMENT_VARIANTS[1]


def dark_mode_enabled(distinct_id: str) -> bool:
    """Whether the boolean ``dark-mode`` flag (30% rollout) is on for a user."""
    return flag_hash(DARK_MODE_FLAG, distinct_id) <= DARK_MODE_ROLLOUT


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


_PICK_SLOTS = 4096


def _pick_table(pairs) -> tuple:
    """Expand (item, weight) pairs into 4096 equally likely slots (largest-remainder rounding)."""
    total = sum(weight for _, weight in pairs)
    exact = [weight * _PICK_SLOTS / total for _, weight in pairs]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(pairs)), key=lambda i: counts[i] - exact[i])
    for i in by_remainder[:_PICK_SLOTS - sum(counts)]:
        counts[i] += 1
    return tuple(item for (item, _), count in zip(pairs, counts) for _ in range(count))


def _Pick(pairs):
    """A weighted choice over a fixed table of (item, weight): ``pick(rng.random) -> item``."""
    table = _pick_table(pairs)

    def pick(rnd):
        return table[int(rnd() * _PICK_SLOTS)]
    return pick


def _one(rnd, seq):
    """A uniform choice (cheaper than Random.choice)."""
    return seq[int(rnd() * len(seq))]


_NORMAL_N = 4096
# Standard-normal quantiles at the midpoints of 4096 equal-probability slices: a fast, exact-enough
# source of normal draws (one uniform each) for the many small time gaps.
_NORMAL = tuple(NormalDist().inv_cdf((i + 0.5) / _NORMAL_N)
                for i in range(_NORMAL_N))
_exp = math.exp


def _gap_table(median_s: float, sigma: float) -> tuple[int, ...]:
    """Lognormal waiting times (ms) at the _NORMAL quantiles, capped at 25 minutes."""
    return tuple(int(min(median_s * 1000.0 * _exp(sigma * z), 1_500_000.0)) + 300
                 for z in _NORMAL)


_GAP_TABLES: dict[tuple[float, float], tuple[int, ...]] = {}
_PAGE_GAPS = _GAP_TABLES[(PAGE_GAP_MEDIAN_S, PAGE_GAP_SIGMA)] = _gap_table(PAGE_GAP_MEDIAN_S,
                                                                         PAGE_GAP_SIGMA)
_GOLDEN = (math.sqrt(5) - 1) / 2


def _title(words: str) -> str:
    return words.replace("-", " ").replace("/", " · ").capitalize()


_COUNTRY_PICK = _Pick([(row, row[3]) for row in COUNTRIES])
_PLATFORM_PICK = _Pick([(row, row[3]) for row in PLATFORMS])
_BROWSER_PICKS = {id(row): _Pick([(b, b[1]) for b in row[4]]) for row in PLATFORMS}
_SOURCE_BY_KEY = {row[0]: row for row in SOURCES}
_SOURCE_PICK = _Pick([(row, row[1]) for row in SOURCES])
_LANDING_PICKS = {row[0]: _Pick(list(row[4])) for row in SOURCES}
_RETURN_SOURCE_PICK = _Pick(RETURN_SOURCES)
_APP_SOURCE_PICK = _Pick(APP_RETURN_SOURCES)
_MARKETING_NEXT_TABLE = _pick_table(MARKETING_NEXT)
_APP_NEXT_TABLE = _pick_table(APP_NEXT)
_HOUR_PICK = _Pick(list(enumerate(HOUR_WEIGHTS)))
_PLAN_PICK = _Pick(list(PLAN_SHARES.items()))
_EMPLOYEES_PICK = _Pick(EMPLOYEE_BUCKETS)
_API_TABLE = _pick_table([(row, row[2]) for row in API_ENDPOINTS])
_STATUS_TABLE = _pick_table(API_STATUS)


def _expected_signup_mult() -> float:
    """E[source × browser × country multiplier] over first-visit traffic, to normalise rates."""
    src = sum(r[1] * r[5] for r in SOURCES) / sum(r[1] for r in SOURCES)
    cty = sum(r[3] * r[4] for r in COUNTRIES) / sum(r[3] for r in COUNTRIES)
    plat = 0.0
    for row in PLATFORMS:
        browsers = row[4]
        plat += row[3] * sum(b[1] * b[3] for b in browsers) / sum(b[1] for b in browsers)
    plat /= sum(r[3] for r in PLATFORMS)
    return src * cty * plat


_SIGNUP_BASE = SIGNUP_RATE / _expected_signup_mult()

# Pre-rendered autocapture targets: page kind -> [(text, $elements_chain)]. PostHog's chain
# format: tag, sorted classes, then the attributes sorted by name; elements innermost first.


def _chain(tag: str, classes: str, text: str, href: str | None, parents: str) -> str:
    attrs = f'attr__class="{classes}"' if classes else ""
    cls = "".join("." + c for c in sorted(classes.split()))
    if href:
        attrs += f'attr__href="{href}"href="{href}"'
    text_attr = f'text="{text}"' if text else ""
    return f'{tag}{cls}:{attrs}nth-child="1"nth-of-type="1"{text_attr};{parents}'


_BODY = 'body:nth-child="2"nth-of-type="1"'
_NAV = f'nav.site-nav:attr__class="site-nav"nth-child="1"nth-of-type="1";{_BODY}'
_MAIN = f'main.content:attr__class="content"nth-child="2"nth-of-type="1";{_BODY}'
_SIDEBAR = f'aside.app-sidebar:attr__class="app-sidebar"nth-child="1"nth-of-type="1";{_BODY}'
_FORM = f'form:attr__id="signup-form"attr_id="signup-form"nth-child="1"nth-of-type="1";{_MAIN}'
_LOGIN_FORM = f'form:attr__id="login-form"attr_id="login-form"nth-child="1"nth-of-type="1";{_MAIN}'


def _targets(*specs):
    return tuple((text, _chain(tag, classes, text, href, parents))
                 for tag, classes, text, href, parents in specs)


CLICK_TARGETS = {
    "marketing": _targets(("a", "nav-link", "Pricing", "/pricing", _NAV),
                          ("a", "nav-link", "Docs", "/docs", _NAV),
                          ("a", "nav-link", "Blog", "/blog", _NAV),
                          ("a", "btn btn-primary", "Get started", f"https://{APP_HOST}/signup",
                           _NAV),
                          ("button", "btn btn-secondary", "Watch demo", None, _MAIN)),
    "pricing": _targets(("button", "btn btn-primary plan-cta", "Start free trial", None, _MAIN),
                        ("button", "toggle billing-toggle", "Yearly", None, _MAIN),
                        ("a", "link", "Contact sales", "/contact", _MAIN)),
    "blog": _targets(("a", "btn btn-primary", "Try Acme free", "https://app.acme.io/signup", _MAIN),
                     ("button", "btn subscribe", "Subscribe", None, _MAIN),
                     ("a", "post-link", "Read next", "/blog", _MAIN)),
    "docs": _targets(("button", "copy-button", "Copy", None, _MAIN),
                     ("a", "sidebar-link", "Install", "/docs/install/javascript", _MAIN),
                     ("a", "sidebar-link", "API reference", "/docs/api/overview", _MAIN)),
    "signup": _targets(("button", "btn btn-primary", "Create account", None, _FORM),
                       ("button", "btn btn-oauth", "Continue with Google", None, _FORM)),
    "login": _targets(("button", "btn btn-primary", "Log in", None, _LOGIN_FORM),),
    "app": _targets(("a", "sidebar-item", "Projects", "/app/projects", _SIDEBAR),
                    ("a", "sidebar-item", "Reports", "/app/reports", _SIDEBAR),
                    ("button", "btn btn-primary", "New project", None, _MAIN),
                    ("button", "btn", "Filter", None, _MAIN)),
    "project": _targets(("button", "btn btn-primary", "Add task", None, _MAIN),
                        ("input", "task-checkbox", "", None, _MAIN),
                        ("button", "btn", "Board view", None, _MAIN),
                        ("a", "task-link", "Open task", None, _MAIN)),
    "billing": _targets(("button", "btn btn-primary upgrade", "Upgrade", None, _MAIN),),
    "team": _targets(("button", "btn btn-primary", "Invite member", None, _MAIN),),
    "settings": _targets(("button", "btn btn-primary", "Save changes", None, _MAIN),
                         ("input", "toggle", "", None, _MAIN)),
}


# ---------------------------------------------------------------------------------------------
# The simulation
# ---------------------------------------------------------------------------------------------


_UUID7_FORMAT = "%08x-%04x-7%03x-%04x-%012x"
_NO_PAGE: dict = {}
_REFERRING_DOMAINS = {"$direct": "$direct"}
_fromts = datetime.fromtimestamp


class _Visitor:
    __slots__ = ("anon_id", "device", "country", "tz_off", "source", "signup_p", "purchase_mult",
                 "device_type", "personless", "invite", "first_touch")


class _User:
    __slots__ = ("user_id", "visitor", "company", "groups", "devices", "signup_day", "last_day",
                 "activated", "act_day", "invite_day", "billing_day", "cancel_day", "projects",
                 "plan", "variant", "dark", "flag_props", "api_user", "visit_p", "last_ms",
                 "purchase_mult", "invited", "paid_day", "exposed", "email", "ident_props")


class _Invite:
    __slots__ = ("inviter", "project", "first", "last", "email")

    def __init__(self, inviter, project, first, last, email):
        self.inviter, self.project, self.first, self.last = inviter, project, first, last
        self.email = email


def _email(first: str, last: str, domain: str) -> str:
    local = f"{first}.{last}".lower().replace(" ", "")
    for accented, plain in (("ü", "u"), ("é", "e"), ("á", "a"), ("ó", "o"), ("ł", "l")):
        local = local.replace(accented, plain)
    return f"{local}@{domain}"


class _Company:
    __slots__ = ("key", "name", "industry", "employees", "plan")


class _Tab:
    """One browser session (posthog-js state: ids, registered properties, current page)."""

    __slots__ = ("base", "did", "page", "pb", "t", "path", "page_t")


def _event_sink(seed: int, n_events: int, end_ms: int, day0_ms: int, slots: list):
    """``emit(ms, name, distinct_id, properties, top=None)`` into 10-minute slots, and a count.

    Events after `end` never happen. Event uuids are UUIDv7 as the SDKs make them: the
    event's millisecond, version 7, then ``rand_a`` and ``rand_b`` drawn from seeded random
    tables by scrambled functions of the event's number. For any two numbers below 2**28
    the pair differs (the ``rand_b`` index is a bijection of the low bits, and ``rand_a`` then
    separates the high bits), so the uuids are unique; and it is much cheaper than
    formatting fresh random bits for every event.
    """
    rng = random.Random(f"sightline-demo-uuids-{seed}")
    tail_bits = min(16, max(8, (max(n_events, 1) - 1).bit_length()))   # 256..65536 tails
    tail_mask = (1 << tail_bits) - 1
    # rand_b: the variant (binary 10) then 62 random bits, "vxxx-xxxxxxxxxxxx".
    digits = rng.randbytes(8 << tail_bits).hex()
    variant = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
    tails = [f"{variant[digits[i]]}{digits[i + 1:i + 4]}-{digits[i + 4:i + 16]}"
             for i in range(0, 16 << tail_bits, 16)]
    rand_a0 = rng.getrandbits(12)
    hex4 = _hex4()
    hex3 = hex4[-4096:]
    hex3 = [h[1:] for h in hex3]
    hex3 = hex3[rand_a0:] + hex3[:rand_a0]
    count = 0

    def emit(ms: int, name: str, did: str, props: dict, top: dict | None = None) -> None:
        nonlocal count
        if ms < end_ms:
            count += 1
            # Equal rand_b indexes mean equal low bits; then the rand_a indexes differ by
            # (high-bit difference) * (2**tail_bits + 1), an odd number: never 0 mod 4096.
            rand_a = hex3[(count + (count >> tail_bits)) & 0xFFF]
            event = {"event": name, "distinct_id": did, "timestamp": _fromts(ms / 1000, UTC),
                     "uuid": f"{hex4[ms >> 32]}{hex4[(ms >> 16) & 0xFFFF]}-{hex4[ms & 0xFFFF]}"
                             f"-7{rand_a}-{tails[(count * 40503) & tail_mask]}",
                     "properties": props}
            if top is not None:
                event.update(top)
            slots[(ms - day0_ms) // SLOT_MS].append((ms, event))

    def emitted() -> int:
        return count

    return emit, emitted


def _event_counter(end_ms: int, day0_ms: int, counts: list):
    """The calibration runs' ``emit``: they only need the number of events per day."""
    count = 0

    def emit(ms: int, name: str, did: str, props: dict, top: dict | None = None) -> None:
        nonlocal count
        if ms < end_ms:
            count += 1
            counts[(ms - day0_ms) // DAY_MS] += 1

    def emitted() -> int:
        return count

    return emit, emitted


_HEX4: list[str] = []


def _hex4() -> list[str]:
    """The 65,536 four-digit hex strings, "0000".."ffff"."""
    if not _HEX4:
        hex2 = [f"{i:02x}" for i in range(256)]
        _HEX4.extend([a + b for a in hex2 for b in hex2])
    return _HEX4


class _Sim:
    def __init__(self, seed: int, start_ms: int, end_ms: int, day0_ms: int, n_buckets: int,
                 store: bool = True, n_events: int = 0):
        self.rng = random.Random(seed)
        self.rnd = self.rng.random
        self.bits = random.Random(f"sightline-demo-ids-{seed}").getrandbits
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.day0_ms = day0_ms
        self.n_buckets = n_buckets
        # Output: events by 10-minute slot since day0, handed out behind the watermark. A
        # day's slots are made when the day before starts (events land less than a day after
        # the start of what makes them) and dropped once handed out.
        self.slots: list = [None] * (n_buckets * SLOTS_PER_DAY)
        self.counts = [0] * n_buckets
        self.stores = store
        if store:
            self.emit, self.emitted = _event_sink(seed, n_events, end_ms, day0_ms, self.slots)
        else:
            self.emit, self.emitted = _event_counter(end_ms, day0_ms, self.counts)
        # Work: (start ms, sequence, kind, obj) items by day; today's are a heap.
        self.pending: dict[int, list] = {}
        self.heap: list = []
        self.seq = 0
        self.cur = 0
        self.n_users = 0
        self.n_projects = 0
        self.n_invoices = 0
        self.launch_source: dict[int, tuple[str, float]] = {}   # day -> (source, share)
        self.checkout_draws = {variant: 0 for variant in EXPERIMENT_VARIANTS}
        self.checkout_phase = self.rnd()
        self.domains: set[str] = set()
        self.weekday0 = datetime.fromtimestamp(day0_ms / 1000, UTC).weekday()
        self.weekend = [(self.weekday0 + d) % 7 >= 5 for d in range(n_buckets)]

    # -- ids and output ---------------------------------------------------------------------

    def uuid7(self, ms: int) -> str:
        """A UUIDv7 (as the SDKs make): 48-bit ms time, version 7, variant 10, seeded bits."""
        b = self.bits(74)
        return _UUID7_FORMAT % (ms >> 16, ms & 0xFFFF, b >> 62, 0x8000 | ((b >> 48) & 0x3FFF),
                                b & 0xFFFFFFFFFFFF)

    def schedule(self, ms: int, kind: str, obj) -> None:
        """Something (a session, an invoice…) that starts at `ms`, always later than now."""
        day = (ms - self.day0_ms) // DAY_MS
        if day >= self.n_buckets or ms >= self.end_ms:
            return
        self.seq += 1
        item = (ms, self.seq, kind, obj)
        if day == self.cur:
            heappush(self.heap, item)
        else:
            self.pending.setdefault(day, []).append(item)

    def day_of(self, ms: int) -> int:
        return (ms - self.day0_ms) // DAY_MS

    def weekday(self, day: int) -> int:
        return (self.weekday0 + day) % 7

    def local_time(self, day: int, tz_off: int) -> int:
        """A time in bucket `day` whose local hour follows HOUR_WEIGHTS (wrapped into the day)."""
        rnd = self.rnd
        hour = (_HOUR_PICK(rnd) - tz_off) % 24
        return self.day0_ms + day * DAY_MS + hour * HOUR_MS + int(rnd() * HOUR_MS)

    def gap(self, median_s: float = PAGE_GAP_MEDIAN_S, sigma: float = PAGE_GAP_SIGMA) -> int:
        """Milliseconds until the next action: lognormal, capped well inside the 30 min rule."""
        table = _GAP_TABLES.get((median_s, sigma))
        if table is None:
            table = _GAP_TABLES[(median_s, sigma)] = _gap_table(median_s, sigma)
        return table[int(self.rnd() * _NORMAL_N)]

    # -- the day loop -----------------------------------------------------------------------

    def start_day(self, day: int, n_new: int, window: tuple[int, int]) -> None:
        """Queue what starts in bucket `day`: returning users, revisits, and `n_new` visitors."""
        self.cur = day
        slots = self.slots
        if self.stores:
            for i in range(day * SLOTS_PER_DAY, min(len(slots), (day + 2) * SLOTS_PER_DAY)):
                if slots[i] is None:
                    slots[i] = []
        heap = self.pending.pop(day, [])
        lo, hi = window
        for _ in range(n_new):
            self.seq += 1
            heap.append(self.arrival(day, lo, hi))
        heapify(heap)
        self.heap = heap

    def advance(self, final_slot: int) -> int | None:
        """Run today's items in start order until one starts after slot `final_slot`.

        Returns that item's slot, before which no new event can appear any more (every item
        starts later than the ones already run, and events never precede their item's
        start), or None when the day has nothing left.
        """
        heap = self.heap
        day0_ms = self.day0_ms
        while heap:
            item = heap[0]
            slot = (item[0] - day0_ms) // SLOT_MS
            if slot > final_slot:
                return slot
            heappop(heap)
            ms, _, kind, obj = item
            if kind == "app":
                self.app_session(obj, ms)
            elif kind == "visitor":
                self.new_visitor(ms, self.cur, home=obj)
            elif kind == "anon":
                self.anon_revisit(obj, ms)
            elif kind == "invitee":
                self.new_visitor(ms, self.cur, invite=obj)
            else:
                self.invoice(obj, ms)
        return None

    def run_day(self, day: int, n_new: int, window: tuple[int, int]) -> None:
        """Simulate all of bucket `day` at once (the calibration runs)."""
        self.start_day(day, n_new, window)
        self.advance(1 << 62)

    def top_up(self, day: int, window: tuple[int, int], target: int) -> None:
        """More new visitors until `target` events exist (the last bucket only)."""
        lo, hi = window
        while hi > lo and self.emitted() < target:
            self.seq += 1
            heappush(self.heap, self.arrival(day, lo, hi))
            self.advance(1 << 62)

    def arrival(self, day: int, lo: int, hi: int) -> tuple:
        """A new visitor's work item: where they are, and when (their local daytime, mostly)."""
        rnd = self.rnd
        country = _COUNTRY_PICK(rnd)
        tz = _one(rnd, country[7])
        for _ in range(12):
            ms = self.local_time(day, tz[0])
            if lo <= ms < hi:
                break
        else:
            ms = lo + int(rnd() * (hi - lo))
        return (ms, self.seq, "visitor", (country, tz))

    # -- visitors and anonymous browsing --------------------------------------------------

    def new_visitor(self, ms: int, day: int, invite=None, home=None) -> None:
        rnd = self.rnd
        v = _Visitor()
        if home is not None:
            country, (tz_off, tz_name) = home
        else:                                   # an invited teammate, often a compatriot
            country = invite.inviter.visitor.country if rnd() < 0.7 else _COUNTRY_PICK(rnd)
            tz_off, tz_name = _one(rnd, country[7])
        platform = _PLATFORM_PICK(rnd)
        browser = _BROWSER_PICKS[id(platform)](rnd)
        width, height = _one(rnd, platform[5])
        if invite is not None:
            source = "invite"
        else:
            launch = self.launch_source.get(day)
            if launch is not None and rnd() < launch[1]:
                source = launch[0]
            else:
                source = _SOURCE_PICK(rnd)[0]
        v.anon_id = self.uuid7(ms)
        v.country = country
        v.tz_off = tz_off
        v.source = source
        v.device_type = platform[2]
        v.invite = invite
        chrome_h = 80 if platform[2] == "Desktop" else 110
        v.device = {
            "$os": platform[0], "$os_version": _one(rnd, platform[1]),
            "$browser": browser[0], "$browser_version": _one(rnd, browser[2]),
            "$device_type": platform[2],
            "$screen_height": height, "$screen_width": width,
            "$viewport_height": height - chrome_h - int(rnd() * 60), "$viewport_width": width,
            "$browser_language": country[6], "$browser_language_prefix": country[6][:2],
            "$timezone": tz_name, "$lib": "web", "$lib_version": WEB_LIB_VERSION,
            "$device_id": v.anon_id,
            "$geoip_country_code": country[0], "$geoip_country_name": country[1],
            "$geoip_continent_code": country[2], "$geoip_city_name": _one(rnd, country[8]),
            "$geoip_time_zone": tz_name,
        }
        src_row = _SOURCE_BY_KEY.get(source)
        if invite is not None:
            v.signup_p = 1.0            # the invitation link goes straight to sign-up
            v.purchase_mult = country[5]
        else:
            v.signup_p = min(0.9, _SIGNUP_BASE * src_row[5] * browser[3] * country[4])
            v.purchase_mult = src_row[6] * country[5] * DEVICE_PURCHASE_MULT[platform[2]]
        will_signup = rnd() < v.signup_p
        v.personless = (not will_signup) and invite is None and rnd() < PERSONLESS_SHARE
        v.first_touch = None
        now_signup = will_signup and (invite is not None or rnd() < SIGNUP_ON_FIRST_VISIT)
        end_ms = self.marketing_session(v, ms, day, source, now_signup)
        if will_signup and not now_signup:
            if rnd() < 0.35:     # same day, a few hours later
                later = end_ms + int((1 + rnd() * 6) * HOUR_MS)
            else:
                later = self.local_time(self.day_of(end_ms) + 1 + int(rnd() * rnd() * 10), tz_off)
            self.schedule(max(later, end_ms + 40 * MINUTE_MS), "anon", (v, True))
        elif not will_signup and rnd() < ANON_RETURN_RATE:
            later = self.local_time(self.day_of(end_ms) + 1 + int(rnd() * rnd() * 21), tz_off)
            self.schedule(max(later, end_ms + 40 * MINUTE_MS), "anon", (v, False))

    def anon_revisit(self, obj, ms: int) -> None:
        v, signup = obj
        self.marketing_session(v, ms, self.day_of(ms), _RETURN_SOURCE_PICK(self.rnd), signup)

    def new_tab(self, device: dict, did: str, ms: int, referrer: str, extra: dict | None) -> _Tab:
        tab = _Tab()
        sid = self.uuid7(ms)
        domain = _REFERRING_DOMAINS.get(referrer)
        if domain is None:
            domain = _REFERRING_DOMAINS[referrer] = referrer.split("/")[2]
        base = {**device, "distinct_id": did, "$session_id": sid,
                "$window_id": sid if self.rnd() < 0.8 else self.uuid7(ms),
                "$referrer": referrer, "$referring_domain": domain}
        if extra:
            base.update(extra)
        tab.base = tab.pb = base
        tab.page = _NO_PAGE
        tab.did = did
        tab.t = ms
        tab.path = None
        tab.page_t = ms
        return tab

    def identified(self, tab: _Tab, did: str, extra: dict) -> None:
        """After posthog.identify(): the new distinct_id is registered on every later event."""
        base = {**tab.base, "distinct_id": did, **extra}
        base.pop("$process_person_profile", None)
        tab.base = base
        tab.pb = None
        tab.did = did

    @staticmethod
    def page_base(tab: _Tab) -> dict:
        """Properties every event on the current page carries (posthog-js's registered ones)."""
        tab.pb = pb = {**tab.base, **tab.page}
        return pb

    def pageview(self, tab: _Tab, host: str, path: str, query: str = "",
                 url_props: dict | None = None) -> None:
        tab.page = page = {"$current_url": f"https://{host}{path}{query}", "$host": host,
                           "$pathname": path}
        if url_props:
            page.update(url_props)
        tab.pb = None                 # the page's base properties, made when first needed
        props = {**tab.base, **page, "title": _TITLE_CACHE.get(path) or _page_title(path)}
        if tab.path is not None:
            props["$prev_pageview_pathname"] = tab.path
            props["$prev_pageview_duration"] = (tab.t - tab.page_t) // 100 / 10
        tab.path = path
        tab.page_t = tab.t
        self.emit(tab.t, "$pageview", tab.did, props)

    def event(self, tab: _Tab, name: str, extra: dict | None = None, top: dict | None = None):
        props = (tab.pb or self.page_base(tab)).copy()
        if extra:
            props.update(extra)
        self.emit(tab.t, name, tab.did, props, top)

    def click(self, tab: _Tab, kind: str, index: int | None = None) -> None:
        targets = CLICK_TARGETS[kind]
        text, chain = targets[int(self.rnd() * len(targets)) if index is None else index]
        t = tab.t = tab.t + 1000 + int(self.rnd() * 12_000)
        props = (tab.pb or self.page_base(tab)).copy()
        props["$event_type"] = "click"
        props["$ce_version"] = 1
        props["$elements_chain"] = chain
        if text:
            props["$el_text"] = text
        self.emit(t, "$autocapture", tab.did, props)

    def pageleave(self, tab: _Tab) -> None:
        tab.t += 1000 + int(self.rnd() * 20_000)
        scroll = int(20 + self.rnd() * 80)
        self.event(tab, "$pageleave", {
            "$prev_pageview_pathname": tab.path,
            "$prev_pageview_duration": (tab.t - tab.page_t) // 100 / 10,
            "$prev_pageview_last_scroll_percentage": scroll,
            "$prev_pageview_max_scroll_percentage": scroll})

    def marketing_session(self, v: _Visitor, ms: int, day: int, source: str, signup: bool) -> int:
        """An anonymous visit to the marketing site, optionally ending in a sign-up."""
        rnd = self.rnd
        if source == "invite":
            referrer, utm, landing = "$direct", ("invite", "email", ("team-invite",)), None
        else:
            row = _SOURCE_BY_KEY[source]
            referrer, utm = row[2], row[3]
            landing = _LANDING_PICKS[source](rnd)
        extra = {"$process_person_profile": False} if v.personless else None
        tab = self.new_tab(v.device, v.anon_id, ms, referrer, extra)
        query = ""
        url_props = None
        if utm is not None:
            campaign = _one(self.rnd, utm[2]) if utm[2] else None
            url_props = {"utm_source": utm[0]}
            query = f"?utm_source={utm[0]}"
            if utm[1]:
                url_props["utm_medium"] = utm[1]
                query += f"&utm_medium={utm[1]}"
            if campaign:
                url_props["utm_campaign"] = campaign
                query += f"&utm_campaign={campaign}"
            if utm[1] == "cpc":
                gclid = "Cj0KCQiA" + "%012x" % self.bits(48)
                url_props["gclid"] = gclid
                query += f"&gclid={gclid}"
        if landing is None:      # invitee: straight to the app's sign-up page
            invite_token = "%010x" % self.bits(40)
            self.pageview(tab, APP_HOST, "/signup", f"{query}&invite={invite_token}", url_props)
            v.first_touch = (referrer, "$direct", url_props, tab.page["$current_url"], "/signup")
            return self.signup(tab, v, day)
        n_pages = 1
        while n_pages < MAX_PAGES and rnd() < MARKETING_CONTINUE:
            n_pages += 1
        path = _concrete(landing, rnd)
        for i in range(n_pages):
            if i:
                tab.t += _PAGE_GAPS[int(rnd() * _NORMAL_N)]
                path = _concrete(_MARKETING_NEXT_TABLE[int(rnd() * _PICK_SLOTS)], rnd)
                if path == tab.path:
                    path = "/pricing" if path != "/pricing" else "/"
            self.pageview(tab, MARKETING_HOST, path, query if i == 0 else "",
                          url_props if i == 0 else None)
            if v.first_touch is None:
                v.first_touch = (referrer, tab.base["$referring_domain"], url_props,
                                 tab.page["$current_url"], path)
            if rnd() < CLICK_RATE:
                self.click(tab, _click_kind(path))
            if rnd() < (PAGELEAVE_RATE if i < n_pages - 1 or signup else 0.6):
                self.pageleave(tab)
        if not signup:
            return tab.t
        tab.t += self.gap(12)
        self.click(tab, "marketing", 3)                       # "Get started"
        tab.t += 800 + int(rnd() * 1500)
        self.pageview(tab, APP_HOST, "/signup")
        return self.signup(tab, v, day)

    # -- sign-up and the app ------------------------------------------------------------------

    def new_company(self) -> _Company:
        rnd = self.rnd
        c = _Company()
        for attempt in range(12):
            name = f"{_one(rnd, COMPANY_WORDS)} {_one(rnd, COMPANY_SUFFIXES)}"
            if attempt >= 4:
                name += " " + _one(rnd, ("Group", "Inc", "GmbH", "Ltd", "Partners", "Collective"))
            if attempt >= 8:
                name += f" {len(self.domains)}"
            key = name.replace(" ", "").lower() + _one(rnd, COMPANY_TLDS)
            if key not in self.domains:
                break
        self.domains.add(key)
        c.key, c.name = key, name
        c.industry = _one(rnd, INDUSTRIES)
        low, high = _EMPLOYEES_PICK(self.rnd)
        c.employees = low + int(rnd() * (high - low + 1))
        c.plan = "free"
        return c

    def company_props(self, c: _Company) -> dict:
        return {"name": c.name, "industry": c.industry, "employees": c.employees, "plan": c.plan,
                "domain": c.key}

    def signup(self, tab: _Tab, v: _Visitor, day: int) -> int:
        """Sign-up form → $identify → signed_up → $groupidentify → onboarding in the app."""
        rnd = self.rnd
        rng = self.rng
        tab.t += self.gap(35, 0.6)
        method = "email" if rnd() < 0.5 else ("google" if rnd() < 0.75 else "github")
        self.click(tab, "signup", 0 if method == "email" else 1)
        self.n_users += 1
        u = _User()
        u.user_id = uid = f"user_{self.n_users}"
        u.visitor = v
        invite = v.invite
        u.invited = invite is not None
        if invite is not None:
            u.company = company = invite.inviter.company
            u.projects = [invite.project] if invite.project else []
            first, last, email = invite.first, invite.last, invite.email
        else:
            u.company = company = self.new_company()
            u.projects = []
            first, last = _one(rnd, FIRST_NAMES), _one(rnd, LAST_NAMES)
            email = _email(first, last, company.key)
        u.email = email
        u.groups = {"company": company.key}
        u.variant = checkout_variant(uid)
        u.dark = dark_mode_enabled(uid)
        u.flag_props = {"$feature/new-checkout": u.variant, "$feature/dark-mode": u.dark}
        u.devices = [v]
        u.signup_day = day
        u.plan = "free"
        u.paid_day = None
        u.exposed = False
        u.purchase_mult = v.purchase_mult
        # Destiny: activation, retention, invitations, checkout.
        if u.invited:
            u.activated = rnd() < INVITEE_ACTIVATION_RATE
            keep = KEEP_RATE_INVITEE
        else:
            u.activated = rnd() < ACTIVATION_RATE
            keep = KEEP_RATE_ACTIVATED if u.activated else KEEP_RATE_OTHER
        keeper = rnd() < keep
        if keeper:
            life = rng.expovariate(1 / KEEPER_MEAN_LIFE_DAYS)
            lo, hi = VISIT_P_KEEPER
        else:
            life = rng.expovariate(1 / CHURNER_MEAN_LIFE_DAYS)
            lo, hi = VISIT_P_CHURNER
        u.visit_p = lo + (hi - lo) * rnd()
        u.act_day = None
        if u.activated:
            u.act_day = day if rnd() < ACTIVATE_IN_FIRST_SESSION else day + 1 + int(rnd() * 6)
            life = max(life, u.act_day - day + 0.5)
        u.last_day = day + int(life)
        u.invite_day = None
        base_day = u.act_day if u.act_day is not None else day
        if rnd() < (INVITE_RATE_ACTIVATED if u.activated else INVITE_RATE_OTHER):
            d = base_day + (0 if rnd() < 0.3 else 1 + int(rnd() * rnd() * 14))
            u.invite_day = min(d, max(u.last_day, base_day))
        u.billing_day = None
        paying_company = company.plan != "free"
        if not paying_company and rnd() < (BILLING_VIEW_ACTIVATED if u.activated
                                           else BILLING_VIEW_OTHER):
            d = base_day + int(rnd() * 21)
            if d <= u.last_day or rnd() < 0.5:
                u.billing_day = d
                u.last_day = max(u.last_day, d)
        u.cancel_day = None
        u.api_user = u.activated and rnd() < API_USER_RATE
        u.last_ms = tab.t

        # posthog.identify(uid, $set, $set_once) then the app's own sign-up event.
        tab.t += 400 + int(rnd() * 900)
        ref, ref_domain, url_props, landing_url, landing_path = v.first_touch
        set_once = {"$initial_referrer": ref, "$initial_referring_domain": ref_domain,
                    "$initial_current_url": landing_url, "$initial_pathname": landing_path,
                    "$initial_browser": v.device["$browser"], "$initial_os": v.device["$os"],
                    "$initial_device_type": v.device["$device_type"]}
        if url_props:
            for key in ("utm_source", "utm_medium", "utm_campaign", "gclid"):
                if key in url_props:
                    set_once["$initial_" + key] = url_props[key]
        person = {"email": email, "name": f"{first} {last}", "plan": "free",
                  "company": company.name, "signup_source": v.source,
                  "signup_method": method, "$browser": v.device["$browser"],
                  "$os": v.device["$os"]}
        if url_props and "utm_source" in url_props:
            person["utm_source"] = url_props["utm_source"]
        # posthog-js registers the new id first, then captures $identify with the person
        # updates as top-level $set/$set_once; the app then calls posthog.group() and the
        # flags reload for the identified user.
        self.identified(tab, uid, {"$user_id": uid, "$is_identified": True})
        self.event(tab, "$identify", {"$anon_distinct_id": v.anon_id},
                   {"$set": person, "$set_once": set_once})
        u.ident_props = {"$user_id": uid, "$is_identified": True, "$groups": u.groups,
                         **u.flag_props}
        self.identified(tab, uid, u.ident_props)
        tab.t += 200 + int(rnd() * 600)
        self.event(tab, "signed_up", {"signup_method": method, "plan": "free",
                                      "invited": u.invited, "source": v.source})
        tab.t += 100 + int(rnd() * 300)
        self.event(tab, "$groupidentify", {"$group_type": "company", "$group_key": company.key,
                                           "$group_set": self.company_props(company)})
        # Onboarding.
        tab.t += self.gap(4, 0.5)
        self.pageview(tab, APP_HOST, "/app/onboarding")
        self.flag_called(tab, u, DARK_MODE_FLAG)
        tab.t += self.gap(40, 0.7)
        self.pageview(tab, APP_HOST, "/app/dashboard")
        self.milestones_first(tab, u, day)
        self.app_pages(tab, u, day, 1 + int(rnd() * 3))
        self.milestones_last(tab, u, day)
        if rnd() < 0.5:
            self.pageleave(tab)
        u.last_ms = tab.t
        self.schedule_next(u, self.day_of(tab.t))
        return tab.t

    def flag_called(self, tab: _Tab, u: _User, flag: str) -> None:
        tab.t += 50 + int(self.rnd() * 400)
        response = u.variant if flag == EXPERIMENT_FLAG else u.dark
        self.event(tab, "$feature_flag_called", {"$feature_flag": flag,
                                                 "$feature_flag_response": response})

    def schedule_next(self, u: _User, day: int) -> None:
        """The user's next app session: daily visits while alive, or a due milestone."""
        rnd = self.rnd
        milestone = min((d for d in (u.act_day, u.invite_day, u.billing_day, u.cancel_day)
                         if d is not None), default=None)
        if milestone is not None and milestone <= day:
            milestone = day + 1
        limit = min(u.last_day, self.n_buckets - 1)
        if milestone is not None:
            limit = min(limit, milestone - 1)
        d = day + 1
        p = u.visit_p
        first_week_end = u.signup_day + 6
        weekend = self.weekend
        while d <= limit:
            q = p * FIRST_WEEK_VISIT_BOOST if d <= first_week_end else p
            if weekend[d]:
                q *= WEEKEND_VISIT_FACTOR
            if rnd() < q:
                break
            d += 1
        else:
            if milestone is None:
                return
            d = milestone
        ms = self.local_time(d, u.visitor.tz_off)
        if ms < u.last_ms + 31 * MINUTE_MS:         # a new session, not the same one
            ms = u.last_ms + 31 * MINUTE_MS + int(rnd() * 3 * HOUR_MS)
        self.schedule(ms, "app", u)

    def app_session(self, u: _User, ms: int) -> None:
        rnd = self.rnd
        v = u.visitor
        day = self.day_of(ms)
        source = _APP_SOURCE_PICK(rnd)
        query, url_props = "", None
        if source == "notification":
            referrer = "$direct"
            url_props = {"utm_source": "acme-notifications", "utm_medium": "email",
                         "utm_campaign": "mention" if rnd() < 0.6 else "weekly-digest"}
            query = f"?utm_source=acme-notifications&utm_medium=email&utm_campaign=" \
                    f"{url_props['utm_campaign']}"
        elif source == "google":
            referrer = "https://www.google.com/"
        else:
            referrer = "$direct"
        device = v
        login = False
        if rnd() < SECOND_DEVICE_RATE:
            if len(u.devices) > 1 and rnd() < 0.7:
                device = u.devices[1]
            else:
                device = self.other_device(v, ms)
                u.devices[1:] = [device]
                login = True
        identified = u.ident_props
        if login:
            tab = self.new_tab(device.device, device.anon_id, ms, referrer, None)
            self.pageview(tab, APP_HOST, "/login")
            tab.t += self.gap(15, 0.5)
            self.click(tab, "login")
            tab.t += 300 + int(rnd() * 800)
            self.identified(tab, u.user_id, {"$user_id": u.user_id, "$is_identified": True})
            self.event(tab, "$identify", {"$anon_distinct_id": device.anon_id},
                       {"$set": {"email": u.email}, "$set_once": {}})
            self.identified(tab, u.user_id, identified)
            tab.t += 500 + int(rnd() * 1000)
            self.pageview(tab, APP_HOST, "/app/dashboard")
        else:
            tab = self.new_tab(device.device, u.user_id, ms, referrer, identified)
            if url_props and u.projects:
                self.pageview(tab, APP_HOST, f"/app/projects/{u.projects[0]}", query, url_props)
            else:
                self.pageview(tab, APP_HOST, "/app/dashboard", query, url_props)
        if rnd() < 0.15:
            self.flag_called(tab, u, DARK_MODE_FLAG)
        self.milestones_first(tab, u, day)
        n_pages = 1
        while n_pages < MAX_PAGES and rnd() < APP_CONTINUE:
            n_pages += 1
        self.app_pages(tab, u, day, n_pages)
        self.milestones_last(tab, u, day)
        if rnd() < 0.45:
            self.pageleave(tab)
        if u.api_user:
            low, high = API_CALLS_PER_SESSION
            self.api_calls(u, ms, low + int(rnd() * (high - low + 1)))
        u.last_ms = tab.t
        self.schedule_next(u, max(day, self.day_of(tab.t)))

    def milestones_first(self, tab: _Tab, u: _User, day: int) -> None:
        """Due milestones done at the start of a session: the first project, invitations."""
        if u.act_day is not None and u.act_day <= day:
            self.create_project(tab, u)
        if u.invite_day is not None and u.invite_day <= day:
            self.invite(tab, u)

    def milestones_last(self, tab: _Tab, u: _User, day: int) -> None:
        """Due milestones done at the end of a session: the checkout, a cancellation."""
        if u.billing_day is not None and u.billing_day <= day:
            self.checkout(tab, u, day)
        if u.cancel_day is not None and u.cancel_day <= day:
            self.cancel(tab, u, day)

    def other_device(self, v: _Visitor, ms: int) -> _Visitor:
        """A second device (usually a phone) of an existing user."""
        rnd = self.rnd
        d = _Visitor()
        d.anon_id = self.uuid7(ms)
        platform = PLATFORMS[3] if rnd() < 0.55 else (PLATFORMS[5] if rnd() < 0.6 else PLATFORMS[0])
        browser = _BROWSER_PICKS[id(platform)](rnd)
        width, height = _one(rnd, platform[5])
        d.device = {**v.device, "$os": platform[0], "$os_version": _one(rnd, platform[1]),
                    "$browser": browser[0], "$browser_version": _one(rnd, browser[2]),
                    "$device_type": platform[2], "$screen_height": height,
                    "$screen_width": width, "$viewport_height": height - 110,
                    "$viewport_width": width, "$device_id": d.anon_id}
        d.country, d.tz_off, d.source = v.country, v.tz_off, v.source
        d.device_type = platform[2]
        d.personless, d.invite, d.first_touch = False, None, None
        return d

    def app_pages(self, tab: _Tab, u: _User, day: int, n_pages: int) -> None:
        rnd = self.rnd
        for _ in range(n_pages):
            tab.t += _PAGE_GAPS[int(rnd() * _NORMAL_N)]
            kind = _APP_NEXT_TABLE[int(rnd() * _PICK_SLOTS)]
            if kind in ("project", "task") and not u.projects:
                kind = "projects"
            if kind == "billing" and (u.billing_day is not None or u.cancel_day is not None):
                kind = "settings"
            if kind == "project":
                pid = u.projects[int(rnd() * len(u.projects))]
                self.pageview(tab, APP_HOST, f"/app/projects/{pid}")
                if u.activated or rnd() < 0.3:
                    while rnd() < 0.55:
                        tab.t += self.gap(20, 0.8)
                        self.event(tab, "task_created", {"project_id": pid,
                                                         "has_due_date": rnd() < 0.4})
                    if rnd() < 0.25:
                        tab.t += self.gap(15, 0.8)
                        self.event(tab, "file_uploaded", {"project_id": pid,
                                                          "size_kb": _file_size_kb(rnd)})
                if rnd() < CLICK_RATE:
                    self.click(tab, "project")
            elif kind == "task":
                pid = u.projects[int(rnd() * len(u.projects))]
                self.pageview(tab, APP_HOST,
                              f"/app/projects/{pid}/tasks/{pid * 37 + int(rnd() * 400)}")
                if rnd() < 0.5:
                    tab.t += self.gap(25, 0.8)
                    self.event(tab, "comment_added", {"project_id": pid,
                                                      "mentions": int(rnd() * rnd() * 3)})
                if rnd() < CLICK_RATE:
                    self.click(tab, "project")
            elif kind == "reports":
                self.pageview(tab, APP_HOST, "/app/reports")
                if rnd() < 0.25:
                    tab.t += self.gap(20, 0.6)
                    self.event(tab, "report_exported",
                               {"format": "csv" if rnd() < 0.6 else "pdf",
                                "report": "velocity" if rnd() < 0.5 else "burndown"})
                elif rnd() < CLICK_RATE:
                    self.click(tab, "app")
            else:
                path = {"projects": "/app/projects", "dashboard": "/app/dashboard",
                        "team": "/app/team", "settings": "/app/settings",
                        "billing": "/app/billing", "integrations": "/app/integrations"}[kind]
                self.pageview(tab, APP_HOST, path)     # (a look at billing: no checkout)
                if rnd() < CLICK_RATE:
                    self.click(tab, "settings" if kind == "settings" else "app")
            if rnd() < PAGELEAVE_RATE * 0.5:
                self.pageleave(tab)

    def create_project(self, tab: _Tab, u: _User) -> None:
        rnd = self.rnd
        tab.t += self.gap(10, 0.6)
        self.click(tab, "app", 2)                              # "New project"
        tab.t += 500 + int(rnd() * 1000)
        self.pageview(tab, APP_HOST, "/app/projects/new")
        tab.t += self.gap(30, 0.6)
        self.n_projects += 1
        pid = 1000 + self.n_projects * 7 + int(rnd() * 7)
        u.projects.append(pid)
        template = _one(self.rnd, ("blank", "kanban", "roadmap", "sprint", "bug-tracker"))
        self.event(tab, "project_created", {"project_id": pid, "template": template,
                                            "first_project": len(u.projects) == 1})
        u.act_day = None
        tab.t += 400 + int(rnd() * 800)
        self.pageview(tab, APP_HOST, f"/app/projects/{pid}")
        while rnd() < 0.6:
            tab.t += self.gap(20, 0.7)
            self.event(tab, "task_created", {"project_id": pid, "has_due_date": rnd() < 0.4})

    def invite(self, tab: _Tab, u: _User) -> None:
        rnd = self.rnd
        u.invite_day = None
        tab.t += self.gap()
        self.pageview(tab, APP_HOST, "/app/team")
        self.click(tab, "team", 0)
        n = 1 if rnd() < 0.7 else 2 + int(rnd() * 3)
        for _ in range(n):
            tab.t += self.gap(12, 0.6)
            first, last = _one(rnd, FIRST_NAMES), _one(rnd, LAST_NAMES)
            email = _email(first, last, u.company.key)
            project = u.projects[0] if u.projects else None
            self.event(tab, "invited_teammate", {
                "invitee_email": email, "role": "member" if rnd() < 0.85 else "admin",
                "project_id": project})
            if rnd() < INVITE_ACCEPT_RATE:
                delay = int(min(self.rng.lognormvariate(math.log(3 * HOUR_MS), 1.4), 9 * DAY_MS))
                at = tab.t + 10 * MINUTE_MS + delay
                self.schedule(at, "invitee", _Invite(u, project, first, last, email))
        if rnd() < 0.15:
            again = self.cur + 3 + int(rnd() * 20)
            if again <= u.last_day:
                u.invite_day = again

    def checkout(self, tab: _Tab, u: _User, day: int) -> None:
        """Billing page: experiment exposure, then maybe a purchase (the experiment's goal)."""
        rnd = self.rnd
        u.billing_day = None
        tab.t += self.gap()
        self.pageview(tab, APP_HOST, "/app/billing")
        if not u.exposed or rnd() < 0.5:
            self.flag_called(tab, u, EXPERIMENT_FLAG)
            u.exposed = True
        if u.company.plan != "free":
            return
        p = PURCHASE_GIVEN_CHECKOUT if u.activated or u.projects else \
            PURCHASE_GIVEN_CHECKOUT_NOT_ACTIVATED
        p *= u.purchase_mult
        if u.variant == "test":
            p *= CHECKOUT_TEST_LIFT
        # The purchase draw comes from a per-variant low-discrepancy sequence, so each arm's
        # realised conversion tracks its true rate closely and the known lift shows even in
        # a small demo (the users behind each draw are still random).
        draws = self.checkout_draws
        draws[u.variant] += 1
        if (draws[u.variant] * _GOLDEN + self.checkout_phase) % 1.0 >= min(p, 0.95):
            if rnd() < 0.4:
                self.click(tab, "billing", 0)
            if rnd() < BILLING_REVISIT and u.last_day > day + 2:
                u.billing_day = day + 2 + int(rnd() * 14)
            return
        # Purchase.
        plan = _PLAN_PICK(rnd)
        if u.company.employees > 200 and rnd() < 0.5:
            plan = "business"
        amount = PLAN_PRICES[plan]
        self.click(tab, "billing", 0)
        tab.t += self.gap(40, 0.5)
        self.pageview(tab, APP_HOST, "/app/billing/checkout")
        tab.t += self.gap(45, 0.5)
        self.event(tab, "purchase", {"plan": plan, "amount": amount, "revenue": amount,
                                     "currency": "USD", "billing_period": "monthly",
                                     "checkout_variant": u.variant})
        t = tab.t + 1500 + int(rnd() * 4000)
        previous = u.plan
        u.plan = plan
        u.paid_day = day
        u.company.plan = plan
        self.backend(t, "upgraded_plan", u, {"plan": plan, "previous_plan": previous,
                                             "mrr": amount})
        self.backend(t + 40, "$set", u, None, {"$set": {"plan": plan, "mrr": amount}})
        self.backend(t + 80, "$groupidentify", u,
                     {"$group_type": "company", "$group_key": u.company.key,
                      "$group_set": {"plan": plan, "mrr": amount}}, groups=False)
        self.invoice(u, t + 3000)
        # Paying users stay; some cancel later.
        u.last_day = max(u.last_day, day + int(self.rng.expovariate(1 / KEEPER_MEAN_LIFE_DAYS))
                         + 30)
        u.visit_p = max(u.visit_p, VISIT_P_KEEPER[0] + 0.1)
        if rnd() < CANCEL_RATE:
            u.cancel_day = day + 20 + int(rnd() * 70)
            u.last_day = max(u.last_day, u.cancel_day)

    def cancel(self, tab: _Tab, u: _User, day: int) -> None:
        rnd = self.rnd
        u.cancel_day = None
        if u.plan == "free":
            return
        tab.t += self.gap()
        self.pageview(tab, APP_HOST, "/app/billing")
        tab.t += self.gap(30, 0.6)
        reason = _one(self.rnd, ("too_expensive", "missing_features", "switched_tool",
                                  "project_ended", "other"))
        self.event(tab, "subscription_cancelled", {
            "plan": u.plan, "reason": reason,
            "months_subscribed": max(1, (day - (u.paid_day or day)) // 30)})
        t = tab.t + 2000 + int(rnd() * 3000)
        u.plan = "free"
        u.company.plan = "free"
        self.backend(t, "$set", u, None, {"$set": {"plan": "free", "mrr": 0}})
        self.backend(t + 40, "$groupidentify", u,
                     {"$group_type": "company", "$group_key": u.company.key,
                      "$group_set": {"plan": "free", "mrr": 0}}, groups=False)
        u.last_day = min(u.last_day, day + int(rnd() * 12))

    # -- backend (posthog-python) ----------------------------------------------------------

    def backend(self, ms: int, name: str, u: _User, props: dict | None, top: dict | None = None,
                groups: bool = True) -> None:
        out = {**props, **PYTHON_CONTEXT} if props else {**PYTHON_CONTEXT}
        out["$lib"] = "posthog-python"
        out["$lib_version"] = PYTHON_LIB_VERSION
        if groups:
            out["$groups"] = u.groups
        self.emit(ms, name, u.user_id, out, top)

    def invoice(self, u: _User, ms: int) -> None:
        if u.plan == "free" or ms >= self.end_ms:
            return
        self.n_invoices += 1
        amount = PLAN_PRICES[u.plan]
        self.backend(ms, "invoice_paid", u, {"amount": amount, "revenue": amount,
                                             "currency": "USD", "plan": u.plan,
                                             "invoice_id": f"in_{100000 + self.n_invoices}"})
        nxt = ms + 30 * DAY_MS
        self.schedule(nxt, "invoice", u)

    def api_calls(self, u: _User, ms: int, n: int) -> None:
        """Backend `api_request` events of an API user (an integration doing its work)."""
        rnd = self.rnd
        base = {**PYTHON_CONTEXT, "$lib": "posthog-python", "$lib_version": PYTHON_LIB_VERSION,
                "$groups": u.groups}
        uid = u.user_id
        emit = self.emit
        t = ms
        for _ in range(n):
            t += int(rnd() * rnd() * 40 * MINUTE_MS) + 200
            method, endpoint, _, median = _API_TABLE[int(rnd() * _PICK_SLOTS)]
            props = base.copy()
            props["endpoint"] = endpoint
            props["method"] = method
            props["status_code"] = _STATUS_TABLE[int(rnd() * _PICK_SLOTS)]
            props["duration_ms"] = int(
                median * 10 * _exp(0.7 * _NORMAL[int(rnd() * _NORMAL_N)])) / 10
            emit(t, "api_request", uid, props)


def _file_size_kb(rnd) -> int:
    return int(20 + 4000 * rnd() * rnd() * rnd())


def _concrete(path: str, rnd) -> str:
    if path == _BLOG:
        return "/blog/" + BLOG_SLUGS[int(rnd() * rnd() * len(BLOG_SLUGS))]
    if path == _DOCS:
        return "/docs/" + DOCS_PAGES[int(rnd() * rnd() * len(DOCS_PAGES))]
    return path


def _click_kind(path: str) -> str:
    if path.startswith("/blog"):
        return "blog"
    if path.startswith("/docs"):
        return "docs"
    if path == "/pricing":
        return "pricing"
    return "marketing"


_TITLES = {"/": "Acme – Projects your team will actually update", "/pricing": "Pricing – Acme",
           "/features": "Features – Acme", "/customers": "Customers – Acme",
           "/about": "About us – Acme", "/changelog": "Changelog – Acme", "/blog": "Blog – Acme",
           "/signup": "Sign up – Acme", "/login": "Log in – Acme"}


def _page_title(path: str) -> str:
    title = _TITLES.get(path)
    if title is None:
        if path.startswith("/blog/"):
            title = _title(path[6:]) + " – Acme blog"
        elif path.startswith("/docs/"):
            title = _title(path[6:]) + " – Acme docs"
        elif path.startswith("/app/projects/"):
            title = "Project – Acme"
        else:
            title = _title(path.rsplit("/", 1)[-1]) + " – Acme"
    if len(_TITLE_CACHE) < 10_000:
        _TITLE_CACHE[path] = title
    return title


_TITLE_CACHE: dict[str, str] = {}


# ---------------------------------------------------------------------------------------------
# Volume calibration and the public API
# ---------------------------------------------------------------------------------------------

_CALIBRATION: list = []


def _calibration() -> tuple[list[float], list[float]]:
    """Expected events per new visitor, by days since arrival, and the weekly rhythm.

    Returns ``(m, r)``: ``m[j]`` = events on day ``j`` after arrival (j < CAL_MAX_DAYS), and
    ``r[weekday]`` = how busy returning activity (j >= 1) is on that weekday (mean 1).
    Measured once per process by simulating visitors with a fixed seed and horizon, so the
    output of :func:`generate` depends on nothing but its arguments.
    """
    if not _CALIBRATION:
        horizon = CAL_MAX_DAYS
        counts = [0] * horizon
        by_weekday = [0] * 7
        monday = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
        for weekday in range(7):
            start = monday + weekday * DAY_MS
            sim = _Sim(CAL_SEED + weekday, start, start + horizon * DAY_MS, start, horizon,
                       store=False)
            for day in range(horizon):
                sim.run_day(day, CAL_VISITORS_PER_WEEKDAY if day == 0 else 0,
                            (start, start + DAY_MS))
            for day, produced in enumerate(sim.counts):
                counts[day] += produced
                if day:
                    by_weekday[(weekday + day) % 7] += produced
        total = 7 * CAL_VISITORS_PER_WEEKDAY
        returning = sum(by_weekday) or 1
        _CALIBRATION[:] = [[c / total for c in counts], [7 * c / returning for c in by_weekday]]
    return _CALIBRATION[0], _CALIBRATION[1]


def _per_visitor_curve(n_days: int) -> list[float]:
    m = _calibration()[0]
    if n_days <= len(m):
        return m[:n_days]
    tail = m[-28:]
    level = sum(tail) / len(tail)
    return m + [level] * (n_days - len(m))


def _default_end() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def generate(n_events: int, *, seed: int = 42, end: datetime | None = None,
             days: int = 90) -> Iterator[dict]:
    """Yield exactly ``n_events`` events (n_events >= 0) in non-decreasing ``timestamp`` order.

    The events cover the ``days`` days up to ``end`` (default: now, UTC, rounded down to the
    hour). The same ``(n_events, seed, end, days)`` gives identical output, uuids included.

    Each event is ``{"event", "distinct_id", "timestamp" (tz-aware UTC datetime), "uuid",
    "properties"}``, plus top-level ``"$set"``/``"$set_once"`` where the SDKs send them.
    """
    if n_events < 0:
        raise ValueError("n_events must be >= 0")
    if days < 1:
        raise ValueError("days must be >= 1")
    if end is None:
        end = _default_end()
    elif end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    else:
        end = end.astimezone(UTC)
    return _generate(n_events, seed, end, days)


def _generate(n_events: int, seed: int, end: datetime, days: int) -> Iterator[dict]:
    if n_events == 0:
        return
    end_ms = (end - _EPOCH) // timedelta(milliseconds=1)
    start_ms = end_ms - days * DAY_MS
    day0_ms = start_ms - start_ms % DAY_MS
    n_buckets = (end_ms - 1 - day0_ms) // DAY_MS + 1
    sim = _Sim(seed, start_ms, end_ms, day0_ms, n_buckets, n_events=n_events)
    rng = random.Random(f"sightline-demo-volume-{seed}")

    # Relative volume of new visitors per day bucket.
    windows = []
    weights = []
    for b in range(n_buckets):
        lo = max(start_ms, day0_ms + b * DAY_MS)
        hi = min(end_ms, day0_ms + (b + 1) * DAY_MS)
        windows.append((lo, hi))
        w = WEEKDAY_WEIGHTS[sim.weekday(b)] * math.exp(GROWTH_PER_DAY * b)
        w *= rng.lognormvariate(0.0, DAILY_NOISE) * (hi - lo) / DAY_MS
        weights.append(w)
    if days >= MIN_DAYS_FOR_LAUNCH:
        launch = int(n_buckets * LAUNCH_AT)
        while sim.weekday(launch) != 1:      # Tuesday
            launch -= 1
        for i, (boost, share) in enumerate(zip(LAUNCH_BOOST, LAUNCH_PH_SHARE)):
            if launch + i < n_buckets:
                weights[launch + i] *= boost
                sim.launch_source[launch + i] = ("producthunt", share)

    # Expected events per visitor by days since arrival, and what the future can still hold.
    # contribution[b][j]: expected events on bucket b + j per visitor arriving in bucket b.
    # Returning activity follows the weekly rhythm; the last bucket usually ends before
    # midnight, so only part of its activity happens.
    m = _per_visitor_curve(n_buckets)
    rhythm = _calibration()[1]
    day_factor = [rhythm[sim.weekday(b)] for b in range(n_buckets)]
    day_factor[-1] *= (windows[-1][1] - windows[-1][0]) / DAY_MS
    first_factor = [1.0] * (n_buckets - 1) + [(windows[-1][1] - windows[-1][0]) / DAY_MS]

    def contribution(b: int, j: int) -> float:
        return m[j] * (day_factor[b + j] if j else first_factor[b + j])

    # future_per_k[b]: expected events per unit of k from the arrivals of buckets b.. to the end.
    future_per_k = [0.0] * (n_buckets + 1)
    for b in range(n_buckets - 1, -1, -1):
        per_visitor = sum(contribution(b, j) for j in range(n_buckets - b))
        future_per_k[b] = future_per_k[b + 1] + weights[b] * per_visitor
    expected = [0.0] * n_buckets                  # expected events per bucket from arrivals so far
    k0 = n_events / future_per_k[0] if future_per_k[0] > 0 else 0.0

    actual = [0] * n_buckets                      # events that happened, per bucket
    slots = sim.slots
    flushed = 0          # slots before this one are final and have been handed out
    yielded = 0
    for b in range(n_buckets):
        # Scale the model by how the recent past actually turned out (the calibration is a
        # finite sample, and this seed's users are a finite sample too).
        recent = max(0, b - RECENT_DAYS)
        seen = sum(expected[recent:b])
        scale = min(max(sum(actual[recent:b]) / seen, 0.5), 2.0) if seen > 50 else 1.0
        committed = scale * sum(expected[b:])
        future = scale * future_per_k[b]
        k = (n_events - sim.emitted() - committed) / future if future else 0.0
        k = min(max(k, 0.5 * k0), 2.0 * k0)
        want = k * weights[b]
        n_new = int(want)
        if rng.random() < want - n_new:
            n_new += 1
        if n_new:
            for j in range(n_buckets - b):
                expected[b + j] += n_new * contribution(b, j)
        last = b == n_buckets - 1
        day_end = (b + 1) * SLOTS_PER_DAY
        started = False
        while flushed < day_end:
            # Simulate up to the next slot that can change, with the cyclic GC paused: no
            # consumer code runs meanwhile, the simulation makes no reference cycles, and it
            # allocates many objects that live until handed out.
            paused = gc.isenabled()
            gc.disable()
            try:
                if not started:
                    sim.start_day(b, n_new, windows[b])
                    started = True
                if last:        # the last bucket also makes up any shortfall, so all at once
                    sim.advance(1 << 62)
                    sim.top_up(b, windows[b], n_events)
                    upto = day_end
                else:
                    slot = sim.advance(flushed)
                    upto = day_end if slot is None else min(slot, day_end)
            finally:
                if paused:
                    gc.enable()
            for h in range(flushed, upto):
                bucket = slots[h]
                slots[h] = None
                if not bucket:
                    continue
                actual[h // SLOTS_PER_DAY] += len(bucket)
                bucket.sort(key=itemgetter(0))
                if len(bucket) > n_events - yielded:
                    del bucket[n_events - yielded:]
                yielded += len(bucket)
                # Hand the events out from the end of a reversed list, so that each one can
                # be freed as soon as the consumer is done with it.
                bucket.reverse()
                pop = bucket.pop
                while bucket:
                    yield pop()[1]
                if yielded >= n_events:
                    return
            flushed = upto
