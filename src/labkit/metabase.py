"""Provision the lab's Metabase dashboard through Metabase's REST API.

`provision(settings)` runs the first-run setup when Metabase has no admin yet
and logs in. It connects Metabase to the warehouse as the read-only BI role.
Then it creates or updates a collection, one native SQL question (card) per
dashboard question, and the dashboard that lays them out. Every item is looked
up by name first and updated in place, so running it again changes what exists
instead of adding copies.

The request bodies follow the endpoint schemas of Metabase's source for the
0.5x and 0.6x releases. A running Metabase serves the reference for its own
version at /api/docs.

NOTE: CI has no Metabase, so these requests run against a live one only in
tests/test_metabase.py, and only when LAB_METABASE_URL points at it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests

from labkit.config import Settings
from labkit.processes import LabError
from labkit.questions import Question, load_all

log = logging.getLogger(__name__)

SITE_NAME = "Payments lab"
DATABASE_NAME = "Payments marts"
COLLECTION_NAME = "Payment monitoring"
DASHBOARD_NAME = "Payment monitoring"
# The marts group by UTC calendar day. With UTC as Metabase's report time zone, a
# day's timestamptz (its UTC midnight) shows as that same day.
REPORT_TIMEZONE = "UTC"
# Metabase dashboards are 24 grid columns wide (GRID_WIDTH in its frontend's dashboard
# grid), and each question takes half a row.
GRID_WIDTH = 24
CARD_WIDTH = 12
CARD_HEIGHT = 6
REQUEST_TIMEOUT_SECONDS = 60
# The keys that PUT /api/dashboard/:id accepts for a dashboard card.
_DASHCARD_KEYS = (
    "id", "card_id", "action_id", "dashboard_tab_id", "row", "col", "size_x", "size_y",
    "parameter_mappings", "visualization_settings",
)


class MetabaseError(LabError):
    """A Metabase request failed or returned something unexpected."""


@dataclass(frozen=True)
class ProvisionResult:
    """Ids of what provision() created or updated, and the dashboard's address."""

    database_id: int
    collection_id: int
    card_ids: dict[str, int]
    dashboard_id: int
    dashboard_url: str

    def summary(self) -> dict[str, Any]:
        return {
            "database_id": self.database_id,
            "collection_id": self.collection_id,
            "card_ids": self.card_ids,
            "dashboard_id": self.dashboard_id,
            "dashboard_url": self.dashboard_url,
        }


class MetabaseClient:
    """A session with one Metabase: JSON requests under /api, with the login's session id."""

    def __init__(self, base_url: str, timeout: float = REQUEST_TIMEOUT_SECONDS) -> None:
        if not base_url:
            raise MetabaseError(
                "LAB_METABASE_URL is not set; set it to Metabase's address, "
                "such as http://127.0.0.1:3000"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request and return its decoded JSON body (None when empty).

        Raises MetabaseError on a network error or an HTTP status of 400 or more,
        with Metabase's message.
        """
        url = f"{self.base_url}/api/{path.lstrip('/')}"
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as error:
            raise MetabaseError(f"{method} {url} failed: {error}") from error
        if response.status_code >= 400:
            raise MetabaseError(
                f"{method} {url} returned HTTP {response.status_code}: {response.text[:500]}"
            )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise MetabaseError(f"{method} {url} returned no JSON: {response.text[:200]}") from None

    def use_session(self, session_id: str) -> None:
        self.session.headers["X-Metabase-Session"] = session_id


def is_reachable(url: str, timeout: float = 5) -> bool:
    """Return True when GET url/api/health responds with status ok."""
    if not url:
        return False
    try:
        response = requests.get(f"{url.rstrip('/')}/api/health", timeout=timeout)
        return response.status_code == 200 and response.json().get("status") == "ok"
    except (requests.RequestException, ValueError):
        return False


def items_of(response: Any) -> list[dict[str, Any]]:
    """Return the items of a list response, which newer Metabase versions wrap in {"data": [...]}."""
    if isinstance(response, dict):
        response = response.get("data", [])
    if not isinstance(response, list):
        raise MetabaseError(f"expected a list of items, got {type(response).__name__}")
    return response


def find_by_name(items: Sequence[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """Return the unarchived item called name with the lowest id, or None."""
    matches = [item for item in items if item.get("name") == name and not item.get("archived")]
    return min(matches, key=lambda item: item["id"]) if matches else None


def log_in(client: MetabaseClient, settings: Settings) -> None:
    """Create the admin account on a new Metabase, or else log in with it."""
    properties = client.request("GET", "session/properties")
    if not properties.get("has-user-setup"):
        token = properties.get("setup-token")
        if not token:
            raise MetabaseError("Metabase has no admin account yet but sent no setup token")
        session = client.request("POST", "setup", json={
            "token": token,
            "user": {
                "first_name": "Lab",
                "last_name": "Admin",
                "email": settings.metabase_user,
                "password": settings.metabase_password,
            },
            "prefs": {"site_name": SITE_NAME},
        })
        log.info("created the Metabase admin %s", settings.metabase_user)
    else:
        session = client.request("POST", "session", json={
            "username": settings.metabase_user, "password": settings.metabase_password,
        })
    client.use_session(session["id"])


def database_details(settings: Settings) -> dict[str, Any]:
    """Return the Postgres connection details that Metabase uses: the BI role, marts only."""
    return {
        "host": settings.metabase_pg_host or settings.pg_host,
        "port": settings.pg_port,
        "dbname": settings.pg_database,
        "user": settings.bi_user,
        "password": settings.bi_password,
        "ssl": False,
        # Metabase syncs only the marts schema, the one the role may read.
        "schema-filters-type": "inclusion",
        "schema-filters-patterns": "marts",
    }


def ensure_database(client: MetabaseClient, settings: Settings) -> int:
    """Create or update the warehouse connection and return its Metabase id."""
    payload = {"name": DATABASE_NAME, "engine": "postgres", "details": database_details(settings)}
    existing = find_by_name(items_of(client.request("GET", "database")), DATABASE_NAME)
    if existing is None:
        database = client.request("POST", "database", json=payload)
        log.info("added the database %s (id %s)", DATABASE_NAME, database["id"])
        return database["id"]
    client.request("PUT", f"database/{existing['id']}", json=payload)
    log.info("updated the database %s (id %s)", DATABASE_NAME, existing["id"])
    return existing["id"]


def ensure_collection(client: MetabaseClient) -> int:
    """Create the dashboard's collection at the top level unless it exists; return its id."""
    collections = [
        item for item in items_of(client.request("GET", "collection"))
        # The root collection's id is the string "root", and personal collections
        # belong to one user; neither is the lab's collection.
        if isinstance(item.get("id"), int) and item.get("personal_owner_id") is None
    ]
    existing = find_by_name(collections, COLLECTION_NAME)
    if existing is not None:
        return existing["id"]
    collection = client.request("POST", "collection", json={
        "name": COLLECTION_NAME,
        "description": "The payment monitoring dashboard and its questions, built by labkit.",
    })
    log.info("created the collection %s (id %s)", COLLECTION_NAME, collection["id"])
    return collection["id"]


def card_payload(question: Question, database_id: int, collection_id: int) -> dict[str, Any]:
    """Return the body of POST or PUT /api/card for a native SQL question."""
    column_settings: dict[str, dict[str, Any]] = {}
    for column in question.money_columns:
        column_settings[_column_key(column)] = {"number_style": "decimal", "decimals": 2}
    for column in question.share_columns:
        column_settings[_column_key(column)] = {"number_style": "percent", "decimals": 2}

    visualization_settings: dict[str, Any] = {"column_settings": column_settings}
    if question.dimensions:
        visualization_settings["graph.dimensions"] = list(question.dimensions)
    if question.metrics:
        visualization_settings["graph.metrics"] = list(question.metrics)

    return {
        "name": question.title,
        "type": "question",
        "description": question.description or None,
        "display": question.display,
        "collection_id": collection_id,
        "dataset_query": {
            "type": "native",
            "database": database_id,
            "native": {"query": question.sql, "template-tags": {}},
        },
        "visualization_settings": visualization_settings,
    }


def _column_key(column: str) -> str:
    # Metabase keys a result column's settings by the JSON text of ["name", <column>].
    return f'["name","{column}"]'


def ensure_cards(
    client: MetabaseClient, questions: Sequence[Question], database_id: int, collection_id: int
) -> dict[str, int]:
    """Create or update one card per question in the collection; return name -> card id."""
    items = items_of(
        client.request("GET", f"collection/{collection_id}/items", params={"models": "card"})
    )
    card_ids = {}
    for question in questions:
        payload = card_payload(question, database_id, collection_id)
        existing = find_by_name(items, question.title)
        if existing is None:
            card_ids[question.name] = client.request("POST", "card", json=payload)["id"]
            log.info("created the card %r (id %s)", question.title, card_ids[question.name])
        else:
            client.request("PUT", f"card/{existing['id']}", json=payload)
            card_ids[question.name] = existing["id"]
            log.info("updated the card %r (id %s)", question.title, existing["id"])
    return card_ids


def dashboard_layout(card_ids: Sequence[int]) -> list[dict[str, int]]:
    """Place the cards in order, two per row of the grid: card_id, row, col, size_x, size_y."""
    per_row = GRID_WIDTH // CARD_WIDTH
    return [
        {
            "card_id": card_id,
            "row": (index // per_row) * CARD_HEIGHT,
            "col": (index % per_row) * CARD_WIDTH,
            "size_x": CARD_WIDTH,
            "size_y": CARD_HEIGHT,
        }
        for index, card_id in enumerate(card_ids)
    ]


def dashcards_for_update(
    layout: Sequence[dict[str, int]],
    existing: Sequence[dict[str, Any]],
    tab_id: int | None = None,
) -> list[dict[str, Any]]:
    """Return the dashcards list of PUT /api/dashboard/:id for a layout.

    A card already on the dashboard keeps its dashcard id and moves to its
    place in the layout. A new card gets a negative id, so Metabase creates
    its dashcard, and goes to tab_id when the dashboard has tabs.
    Dashcards of other cards, added by hand, stay as they are.
    """
    existing_by_card = {dashcard.get("card_id"): dashcard for dashcard in existing}
    laid_out = {placement["card_id"] for placement in layout}
    dashcards = []
    for number, placement in enumerate(layout, start=1):
        current = existing_by_card.get(placement["card_id"])
        dashcard: dict[str, Any] = {
            "id": current["id"] if current else -number,
            **placement,
            "parameter_mappings": [],
            "visualization_settings": {},
        }
        tab = current.get("dashboard_tab_id") if current else tab_id
        if tab is not None:
            dashcard["dashboard_tab_id"] = tab
        dashcards.append(dashcard)

    for dashcard in existing:
        if dashcard.get("card_id") not in laid_out:
            unchanged = {
                key: dashcard[key] for key in _DASHCARD_KEYS if dashcard.get(key) is not None
            }
            if dashcard.get("series"):
                unchanged["series"] = [{"id": card["id"]} for card in dashcard["series"]]
            dashcards.append(unchanged)
    return dashcards


def ensure_dashboard(client: MetabaseClient, card_ids: Sequence[int], collection_id: int) -> int:
    """Create the dashboard unless it exists, lay the cards out on it, and return its id."""
    items = items_of(
        client.request("GET", f"collection/{collection_id}/items", params={"models": "dashboard"})
    )
    existing = find_by_name(items, DASHBOARD_NAME)
    if existing is None:
        dashboard_id = client.request("POST", "dashboard", json={
            "name": DASHBOARD_NAME,
            "description": "Revenue, fraud flags, customers, merchants and detection quality "
            "from the dbt marts.",
            "collection_id": collection_id,
        })["id"]
        log.info("created the dashboard %s (id %s)", DASHBOARD_NAME, dashboard_id)
    else:
        dashboard_id = existing["id"]

    dashboard = client.request("GET", f"dashboard/{dashboard_id}")
    tabs = [{"id": tab["id"], "name": tab["name"]} for tab in dashboard.get("tabs") or []]
    dashcards = dashcards_for_update(
        dashboard_layout(card_ids),
        dashboard.get("dashcards") or [],
        tab_id=tabs[0]["id"] if tabs else None,
    )
    body: dict[str, Any] = {"dashcards": dashcards}
    if tabs:
        body["tabs"] = tabs
    client.request("PUT", f"dashboard/{dashboard_id}", json=body)
    log.info("laid out %d cards on the dashboard (id %s)", len(card_ids), dashboard_id)
    return dashboard_id


def provision(settings: Settings, extra_questions: Sequence[Question] = ()) -> ProvisionResult:
    """Set up Metabase and create or update the dashboard; return the ids and its URL.

    extra_questions are added after the lab's own questions, such as the one
    that notebook 07's exercise writes. Raises MetabaseError when a request fails.
    """
    client = MetabaseClient(settings.metabase_url)
    log_in(client, settings)
    client.request("PUT", "setting/report-timezone", json={"value": REPORT_TIMEZONE})

    database_id = ensure_database(client, settings)
    collection_id = ensure_collection(client)
    questions = [*load_all(), *extra_questions]
    card_ids = ensure_cards(client, questions, database_id, collection_id)
    dashboard_id = ensure_dashboard(
        client, [card_ids[question.name] for question in questions], collection_id
    )
    return ProvisionResult(
        database_id=database_id,
        collection_id=collection_id,
        card_ids=card_ids,
        dashboard_id=dashboard_id,
        dashboard_url=f"{client.base_url}/dashboard/{dashboard_id}",
    )
