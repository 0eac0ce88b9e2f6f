"""The pricing table: known models priced, dated snapshots matched, unknown ones not guessed."""

from __future__ import annotations

import pytest

from apiproc.pricing import cache_savings, total_cost
from apiproc.providers.anthropic_models import price_for
from apiproc.providers.base import Usage


def test_a_snapshot_id_costs_what_its_model_costs() -> None:
    assert price_for("claude-haiku-4-5-20251001") == price_for("claude-haiku-4-5")
    assert price_for("claude-opus-4-20250514") == price_for("claude-opus-4")


def test_a_similar_but_unknown_name_is_not_guessed() -> None:
    assert price_for("claude-opus-4-9") is None
    assert price_for("gpt-4o") is None


def test_cost_counts_every_token_category_at_its_rate() -> None:
    usage = Usage(
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_creation_input_tokens=1_000_000,
        cache_read_input_tokens=1_000_000,
        cache_write_1h_tokens=400_000,
    )
    price = price_for("claude-sonnet-4-5")
    assert price is not None
    # 3 input + 15 output + 0.6 M x 3.75 + 0.4 M x 6 + 0.30 read
    assert price.cost(usage) == pytest.approx(3 + 15 + 2.25 + 2.4 + 0.30)
    assert price.cost(usage, batch=True) == pytest.approx((3 + 15 + 2.25 + 2.4 + 0.30) / 2)


def test_total_cost_names_the_models_it_cannot_price() -> None:
    dollars, unknown = total_cost(
        {"claude-haiku-4-5": Usage(input_tokens=1_000_000), "mystery-model": Usage(input_tokens=5)},
        price_for,
    )
    assert dollars == pytest.approx(1.0)
    assert unknown == ["mystery-model"]


def test_a_dash_zero_alias_costs_what_its_model_costs() -> None:
    assert price_for("claude-sonnet-4-0") == price_for("claude-sonnet-4")
    assert price_for("claude-opus-4-0") == price_for("claude-opus-4")


def test_cache_savings_compare_with_the_uncached_price() -> None:
    usage = Usage(cache_creation_input_tokens=1_000_000, cache_read_input_tokens=9_000_000)
    # uncached: 10 M x $3; cached: 1 M x $3.75 + 9 M x $0.30
    assert cache_savings({"claude-sonnet-4-5": usage}, price_for) == pytest.approx(30 - 3.75 - 2.7)
    assert cache_savings({"mystery-model": usage}, price_for) == 0.0
