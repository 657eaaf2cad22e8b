"""Real places and Faker dimension rows for the simulator's customers, cards and terminals.

The simulator's plane is laid over central Europe so that each point gets a
latitude, a longitude and the nearest of Faker's real places in the lab's
countries, which gives its city, country and currency. The projection is
equirectangular around REFERENCE_POINT, exact enough for a map of the lab but
not for distances: the simulator measures distance on the plane.
"""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
from faker import Faker
from faker.providers.geo import Provider as GeoProvider

from labkit.generator import CARD_BRANDS, CURRENCY_BY_COUNTRY, MCC_WEIGHTS

# Latitude and longitude of the plane's centre, in central Germany.
REFERENCE_POINT = (50.0, 10.0)
KM_PER_DEGREE_LATITUDE = 111.2
FIRST_SIGNUP = date(2012, 1, 1)


def project(
    xy: np.ndarray, plane_size: float, km_per_unit: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return the latitudes and longitudes of plane points, rounded to the schema's 6 places."""
    latitude0, longitude0 = REFERENCE_POINT
    km_east = (xy[:, 0] - plane_size / 2) * km_per_unit
    km_north = (xy[:, 1] - plane_size / 2) * km_per_unit
    latitude = latitude0 + km_north / KM_PER_DEGREE_LATITUDE
    km_per_degree_longitude = KM_PER_DEGREE_LATITUDE * math.cos(math.radians(latitude0))
    longitude = longitude0 + km_east / km_per_degree_longitude
    return np.round(latitude, 6), np.round(longitude, 6)


def locate(
    xy: np.ndarray, plane_size: float, km_per_unit: float, chunk: int = 2048
) -> pd.DataFrame:
    """Return x, y, latitude, longitude, city and country_code of each plane point.

    The city and country are those of the nearest Faker place in the lab's countries.
    """
    places = [p for p in GeoProvider.land_coords if p[3] in CURRENCY_BY_COUNTRY]
    place_latitude = np.array([float(p[0]) for p in places])
    place_longitude = np.array([float(p[1]) for p in places])
    latitude, longitude = project(xy, plane_size, km_per_unit)

    nearest = np.empty(len(xy), dtype=np.int64)
    for start in range(0, len(xy), chunk):
        lat = latitude[start : start + chunk, None]
        lon = longitude[start : start + chunk, None]
        east = (lon - place_longitude) * np.cos(np.radians(lat))
        north = lat - place_latitude
        nearest[start : start + chunk] = np.argmin(east**2 + north**2, axis=1)

    return pd.DataFrame({
        "x": xy[:, 0],
        "y": xy[:, 1],
        "latitude": latitude,
        "longitude": longitude,
        "city": [places[i][2] for i in nearest],
        "country_code": [places[i][3] for i in nearest],
    })


def draw_mccs(rng: np.random.Generator, count: int) -> np.ndarray:
    """Draw merchant category codes with the generator's MCC_WEIGHTS."""
    codes = np.array(list(MCC_WEIGHTS))
    weights = np.array(list(MCC_WEIGHTS.values()), dtype=float)
    return codes[rng.choice(len(codes), count, p=weights / weights.sum())]


def customer_and_card_rows(
    customers: pd.DataFrame, customer_ids: list[str], card_ids: list[str], seed: int,
    start: date,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Return dim_customer and dim_card rows, one card per customer, named by a seeded Faker.

    Customers sign up between FIRST_SIGNUP and a month before start, and each
    card is issued between its customer's signup and the day before start.
    """
    fake = Faker()
    fake.seed_instance(seed)
    rng = np.random.default_rng([seed, 1])
    brands = list(CARD_BRANDS.items())
    customer_rows: list[dict[str, object]] = []
    card_rows: list[dict[str, object]] = []
    for number, place in enumerate(customers.itertuples(index=False)):
        signup = fake.date_between(FIRST_SIGNUP, start - timedelta(days=31))
        customer_rows.append({
            "customer_id": customer_ids[number],
            "full_name": fake.name(),
            "email": fake.email(),
            "city": place.city,
            "country_code": place.country_code,
            "latitude": float(place.latitude),
            "longitude": float(place.longitude),
            "signup_date": signup,
        })
        brand, prefix = brands[int(rng.integers(len(brands)))]
        card_rows.append({
            "card_id": card_ids[number],
            "customer_id": customer_ids[number],
            "card_brand": brand,
            "masked_pan": f"{prefix}{rng.integers(100, 999)} **** **** "
                          f"{rng.integers(10_000):04d}",
            "issued_on": fake.date_between(signup, start - timedelta(days=1)),
        })
    return customer_rows, card_rows


def merchant_rows(
    terminals: pd.DataFrame, merchant_ids: list[str], seed: int
) -> list[dict[str, object]]:
    """Return dim_merchant rows for the terminals, with company names from a seeded Faker."""
    fake = Faker()
    fake.seed_instance(seed + 1)
    return [
        {
            "merchant_id": merchant_ids[number],
            "merchant_name": fake.company(),
            "mcc": place.mcc,
            "city": place.city,
            "country_code": place.country_code,
            "latitude": float(place.latitude),
            "longitude": float(place.longitude),
        }
        for number, place in enumerate(terminals.itertuples(index=False))
    ]
