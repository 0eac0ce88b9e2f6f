"""The pricing table: known models priced, dated snapshots matched, unknown ones not guessed."""

from __future__ import annotations

from datetime import date

import pytest

from apiproc.pricing import Bill, cache_savings, total_cost
from apiproc.providers.anthropic_models import model_facts, price_for
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
    price = price_for("claude-sonnet-4-6")
    assert price is not None
    # 3 input + 15 output + 0.6 M x 3.75 + 0.4 M x 6 + 0.30 read
    assert price.cost(usage) == pytest.approx(3 + 15 + 2.25 + 2.4 + 0.30)
    assert price.cost(usage, batch=True) == pytest.approx((3 + 15 + 2.25 + 2.4 + 0.30) / 2)


def bills(**usage_by_model: Usage) -> dict[str, Bill]:
    """One bill per model, each charged its usage as one answer."""
    found = {}
    for model, usage in usage_by_model.items():
        found[model] = Bill(price_for(model))
        found[model].add(usage)
    return found


def test_total_cost_names_the_models_it_cannot_price() -> None:
    dollars, unknown = total_cost(
        bills(**{"claude-haiku-4-5": Usage(input_tokens=1_000_000), "mystery": Usage(5)})
    )
    assert dollars == pytest.approx(1.0)
    assert unknown == ["mystery"]


def test_a_dash_zero_alias_costs_what_its_model_costs() -> None:
    assert price_for("claude-sonnet-4-0") == price_for("claude-sonnet-4")
    assert price_for("claude-opus-4-0") == price_for("claude-opus-4")


def test_cache_savings_compare_with_the_uncached_price() -> None:
    usage = Usage(cache_creation_input_tokens=100_000, cache_read_input_tokens=900_000)
    # uncached: 1 M x $3; cached: 0.1 M x $3.75 + 0.9 M x $0.30
    saved = cache_savings(bills(**{"claude-sonnet-4-6": usage}))
    assert saved == pytest.approx(3 - 0.375 - 0.27)
    assert cache_savings(bills(mystery=usage)) == 0.0


def test_haiku_5_5_prices_every_token_at_the_higher_tier_past_100k_prompt_tokens() -> None:
    price = price_for("claude-haiku-5-5")
    assert price is not None
    short = Usage(input_tokens=60_000, cache_read_input_tokens=40_000, output_tokens=1_000)
    # The prompt counts input, reads and writes: 100,000 exactly is still the lower tier.
    assert price.cost(short) == pytest.approx((60_000 * 0.10 + 40_000 * 0.01 + 1_000 * 0.50) / 1e6)
    long = Usage(
        input_tokens=60_000,
        cache_read_input_tokens=40_000,
        cache_creation_input_tokens=1,
        output_tokens=1_000,
    )
    expected = (60_000 * 0.50 + 40_000 * 0.05 + 1 * 0.625 + 1_000 * 2.50) / 1e6
    assert price.cost(long) == pytest.approx(expected)
    assert price.cost(long, batch=True) == pytest.approx(expected / 2)


def test_a_tiered_price_is_added_up_answer_by_answer_not_on_the_sum() -> None:
    bill = Bill(price_for("claude-haiku-5-5"))
    for _ in range(3):
        bill.add(Usage(input_tokens=50_000))  # each prompt is short: the lower tier
    assert total_cost({"claude-haiku-5-5": bill})[0] == pytest.approx(3 * 50_000 * 0.10 / 1e6)


@pytest.mark.parametrize(
    ("model", "input_price", "output_price", "cache_read"),
    [
        ("claude-fable-5-2", 8, 40, 0.20),
        ("claude-opus-5-5", 4, 20, 0.20),
        ("claude-sonnet-5-5", 2, 10, 0.10),  # since 2026-10-07
        ("claude-haiku-4-5-20251001", 1, 5, 0.10),
    ],
)
def test_current_models_cost_their_published_prices(
    model: str, input_price: float, output_price: float, cache_read: float
) -> None:
    price = price_for(model)
    assert price is not None
    assert (price.input, price.output, price.cache_read) == (input_price, output_price, cache_read)
    assert price.cache_write_5m == pytest.approx(input_price * 1.25)


def test_the_newer_tokenizer_models_start_with_a_30_percent_higher_token_estimate() -> None:
    older = model_facts("claude-haiku-4-5").token_ratio
    for model in ("claude-haiku-5-5", "claude-opus-4-7", "claude-fable-5-2", "claude-sonnet-5"):
        assert model_facts(model).token_ratio == pytest.approx(older * 1.3, abs=0.01)
    for model in ("claude-sonnet-4-6", "claude-opus-4-6", "claude-haiku-4-5-20251001"):
        assert model_facts(model).token_ratio == older


def test_end_of_life_dates_are_known_for_alias_and_snapshot() -> None:
    assert model_facts("claude-sonnet-4-5").end_of_life == date(2026, 11, 30)
    assert model_facts("claude-sonnet-4-5-20250929").end_of_life == date(2026, 11, 30)
    assert model_facts("claude-opus-4-5-20251101").end_of_life == date(2027, 1, 22)
    assert model_facts("claude-mythos-preview").end_of_life == date(2026, 6, 30)
    assert model_facts("claude-sonnet-4-6").end_of_life is None
