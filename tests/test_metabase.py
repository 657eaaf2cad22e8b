"""Tests of the Metabase provisioning in labkit.metabase.

The pure helpers (finding items by name, the payloads, the dashboard layout)
are tested everywhere. The provisioning itself runs only against a real
Metabase at LAB_METABASE_URL: without it those tests skip and print why.
Metabase must reach the lab's PostgreSQL at LAB_METABASE_PG_HOST (default:
LAB_PG_HOST) and the lab's port.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from labkit import metabase, questions
from labkit.metabase import MetabaseClient, MetabaseError

from .test_dashboard_questions import build_marts

# --- pure helpers ---------------------------------------------------------------------


def test_items_of_unwraps_data():
    assert metabase.items_of({"data": [{"id": 1}], "total": 1}) == [{"id": 1}]


def test_items_of_accepts_plain_list():
    assert metabase.items_of([{"id": 2}]) == [{"id": 2}]


def test_items_of_rejects_other_values():
    with pytest.raises(MetabaseError, match="expected a list"):
        metabase.items_of("not a list")


def test_find_by_name_picks_lowest_unarchived_id():
    items = [
        {"id": 7, "name": "Fraud overview"},
        {"id": 3, "name": "Fraud overview", "archived": True},
        {"id": 5, "name": "Fraud overview"},
        {"id": 1, "name": "Daily revenue trend"},
    ]
    assert metabase.find_by_name(items, "Fraud overview") == {"id": 5, "name": "Fraud overview"}


def test_find_by_name_missing():
    assert metabase.find_by_name([{"id": 1, "name": "Other"}], "Fraud overview") is None


def test_dashboard_layout_two_per_row():
    layout = metabase.dashboard_layout([11, 12, 13])
    assert layout == [
        {"card_id": 11, "row": 0, "col": 0, "size_x": 12, "size_y": 6},
        {"card_id": 12, "row": 0, "col": 12, "size_x": 12, "size_y": 6},
        {"card_id": 13, "row": 6, "col": 0, "size_x": 12, "size_y": 6},
    ]


def test_dashboard_layout_fits_grid():
    for placement in metabase.dashboard_layout(list(range(1, 8))):
        assert placement["col"] + placement["size_x"] <= metabase.GRID_WIDTH


def test_dashcards_for_update_new_dashboard():
    dashcards = metabase.dashcards_for_update(metabase.dashboard_layout([11, 12]), [])
    assert [dashcard["id"] for dashcard in dashcards] == [-1, -2]
    assert [dashcard["card_id"] for dashcard in dashcards] == [11, 12]
    assert all("dashboard_tab_id" not in dashcard for dashcard in dashcards)


def test_dashcards_for_update_reuses_ids_and_keeps_others():
    existing = [
        {"id": 40, "card_id": 12, "row": 9, "col": 0, "size_x": 4, "size_y": 4,
         "dashboard_tab_id": None, "card": {"id": 12}, "created_at": "2026-01-01"},
        {"id": 41, "card_id": None, "row": 20, "col": 0, "size_x": 24, "size_y": 2,
         "visualization_settings": {"virtual_card": {"display": "text"}, "text": "Notes"},
         "parameter_mappings": [], "series": []},
    ]
    dashcards = metabase.dashcards_for_update(metabase.dashboard_layout([11, 12]), existing)
    by_id = {dashcard["id"]: dashcard for dashcard in dashcards}
    assert sorted(by_id) == [-1, 40, 41]
    assert by_id[40]["card_id"] == 12
    assert (by_id[40]["row"], by_id[40]["col"], by_id[40]["size_x"]) == (0, 12, 12)
    assert "card" not in by_id[40]
    assert "created_at" not in by_id[40]
    assert by_id[41]["visualization_settings"]["text"] == "Notes"
    assert by_id[41]["row"] == 20
    assert set(by_id[41]) <= set(metabase._DASHCARD_KEYS)


def test_dashcards_for_update_puts_new_cards_on_tab():
    existing = [{"id": 40, "card_id": 12, "dashboard_tab_id": 8}]
    dashcards = metabase.dashcards_for_update(
        metabase.dashboard_layout([11, 12]), existing, tab_id=5
    )
    assert [dashcard["dashboard_tab_id"] for dashcard in dashcards] == [5, 8]


def test_card_payload_native_query():
    question = questions.load("daily_revenue_trend")
    payload = metabase.card_payload(question, database_id=3, collection_id=9)
    assert payload["name"] == "Daily revenue trend"
    assert payload["display"] == "line"
    assert payload["collection_id"] == 9
    assert payload["dataset_query"] == {
        "type": "native",
        "database": 3,
        "native": {"query": question.sql, "template-tags": {}},
    }


def test_card_payload_formats_money_and_shares():
    settings = metabase.card_payload(questions.load("merchant_sales_by_location"), 3, 9)[
        "visualization_settings"
    ]
    columns = settings["column_settings"]
    assert columns['["name","sales_amount"]'] == {"number_style": "decimal", "decimals": 2}
    assert columns['["name","flagged_share"]']["number_style"] == "percent"
    assert settings["graph.dimensions"] == ["country_name", "currency"]
    assert settings["graph.metrics"] == ["sales_amount"]
    # Metabase's column keys are the JSON text of ["name", column].
    assert all(json.loads(key)[0] == "name" for key in columns)


def test_card_payload_without_description():
    question = dataclasses.replace(questions.load("fraud_overview"), description="")
    assert metabase.card_payload(question, 3, 9)["description"] is None


def test_database_details_use_bi_role(settings):
    details = metabase.database_details(settings)
    assert details["user"] == settings.bi_user
    assert details["password"] == settings.bi_password
    assert details["dbname"] == settings.pg_database
    assert details["port"] == settings.pg_port
    assert details["schema-filters-patterns"] == "marts"


def test_database_details_metabase_host(settings):
    compose_view = dataclasses.replace(settings, metabase_pg_host="postgres")
    assert metabase.database_details(compose_view)["host"] == "postgres"
    assert metabase.database_details(settings)["host"] == (
        settings.metabase_pg_host or settings.pg_host
    )


def test_client_needs_url():
    with pytest.raises(MetabaseError, match="LAB_METABASE_URL is not set"):
        MetabaseClient("")


def test_is_reachable_without_url():
    assert metabase.is_reachable("") is False


# --- against a real Metabase --------------------------------------------------------------


@pytest.fixture(scope="module")
def metabase_settings(settings):
    """Return the settings when a real Metabase responds at LAB_METABASE_URL, else skip."""
    if not settings.metabase_url:
        reason = "LAB_METABASE_URL is not set, so no Metabase to provision"
        print(f"skipping: {reason}")
        pytest.skip(reason)
    if not metabase.is_reachable(settings.metabase_url):
        reason = f"Metabase at {settings.metabase_url} does not answer /api/health"
        print(f"skipping: {reason}")
        pytest.skip(reason)
    return settings


@pytest.fixture(scope="module")
def provisioned(metabase_settings, request) -> tuple[metabase.ProvisionResult, ...]:
    """Load the lab and build the marts, then provision the dashboard twice."""
    # Requested here rather than as an argument: pytest sets up session fixtures
    # first, and the lab must not be reset and loaded when Metabase is missing.
    build_marts(request.getfixturevalue("loaded_lab"))
    return metabase.provision(metabase_settings), metabase.provision(metabase_settings)


@pytest.fixture
def client(metabase_settings) -> MetabaseClient:
    client = MetabaseClient(metabase_settings.metabase_url)
    metabase.log_in(client, metabase_settings)
    return client


def test_provision_twice_keeps_ids(provisioned):
    first, second = provisioned
    assert second.database_id == first.database_id
    assert second.collection_id == first.collection_id
    assert second.card_ids == first.card_ids
    assert second.dashboard_id == first.dashboard_id


def test_provision_creates_one_card_per_question(provisioned, client):
    _, second = provisioned
    items = metabase.items_of(
        client.request("GET", f"collection/{second.collection_id}/items",
                       params={"models": "card"})
    )
    titles = sorted(item["name"] for item in items)
    assert titles == sorted(question.title for question in questions.load_all())


def test_provision_lays_out_every_card(provisioned, client):
    _, second = provisioned
    dashboard = client.request("GET", f"dashboard/{second.dashboard_id}")
    card_ids = sorted(dashcard["card_id"] for dashcard in dashboard["dashcards"])
    assert card_ids == sorted(second.card_ids.values())


def test_provisioned_database_uses_bi_role(provisioned, client, metabase_settings):
    _, second = provisioned
    database = client.request("GET", f"database/{second.database_id}")
    assert database["details"]["user"] == metabase_settings.bi_user


@pytest.mark.parametrize("name", questions.QUESTION_NAMES)
def test_provisioned_card_returns_rows(provisioned, client, metabase_settings, name):
    _, second = provisioned
    result = client.request("POST", f"card/{second.card_ids[name]}/query")
    assert result.get("status") == "completed", result.get("error")
    columns = [column["name"] for column in result["data"]["cols"]]
    expected = questions.run(metabase_settings, questions.load(name))
    assert columns == list(expected.columns)
    assert len(result["data"]["rows"]) == len(expected)
