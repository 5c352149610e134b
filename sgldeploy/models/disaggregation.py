"""When prefill/decode disaggregation pays: the throughput model's figures for a disaggregated deployment, side by
side with the same model served by replicas that do both (on the decode role's placement). Pure.

In a replica that does both, SGLang mixes each new request's prefill into the decode steps of the running batch,
so every running request's inter-token latency carries its share of the prefills that complete meanwhile
(sgldeploy.models.throughput.estimate). Disaggregated, a decode step carries no prefill: its ITL is the bare step,
and each request's time to first token gains the KV cache's trip from the prefill replica over EFA. Per GPU-hour
the work is the same in this model (prefill is not faster for being alone), so what disaggregation buys is ITL,
and it buys most where prompts are long next to the answers; the price is a second node pool, sized in the ratio
of prefill to decode work, and the transfer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sgldeploy.catalog import instance_types
from sgldeploy.models.sizing import Sizing

EFA_EFFICIENCY = 0.5
"""The share of an instance's EFA bandwidth one request's KV transfer sustains: an assumption (no calibration row
measures Mooncake or NIXL over EFA), taken low because a transfer is many per-layer writes, not one stream."""
PAYS_ITL_GAIN = 1.5
"""The ITL gain (colocated over disaggregated) from which the plan says disaggregation pays: a choice, not a
measurement. Below it, the second pool, the KV transfer and their failure modes buy less than a third off ITL."""


@dataclass(frozen=True)
class Colocated:
    """The same workload on replicas that do both, on the decode role's placement."""

    ttft_seconds: float
    itl_seconds: float
    usd_per_million_output_tokens: float | None


@dataclass(frozen=True)
class DisaggregationEstimate:
    input_tokens: int
    output_tokens: int
    batch: int  # requests running on a decode replica
    prefill_seconds: float  # one prompt on a prefill replica
    kv_transfer_seconds: float  # its KV cache to the decode replica over EFA
    ttft_seconds: float
    itl_seconds: float  # a decode step with no prefill in it
    prefill_replicas_per_decode_replica: float  # prefill work per decode replica's, at full batch
    usd_per_million_output_tokens: float | None  # both pools in that ratio; None where a role has no price
    colocated: Colocated
    max_replicas: tuple[int, int]  # the prefill role's, the decode role's

    @property
    def prefill_replicas_needed(self) -> int:
        """Prefill replicas that keep the decode role fed at its most replicas and a full batch."""
        return math.ceil(self.max_replicas[1] * self.prefill_replicas_per_decode_replica - 1e-9)

    @property
    def itl_gain(self) -> float:
        return self.colocated.itl_seconds / self.itl_seconds

    @property
    def pays(self) -> bool:
        return self.itl_gain >= PAYS_ITL_GAIN

    def verdict(self) -> str:
        """One line for the plan: whether it pays, and the figures that say so."""
        share = 1 - self.itl_seconds / self.colocated.itl_seconds
        head = (
            f"pays: prompts of {self.input_tokens:,} tokens for answers of {self.output_tokens:,}; prefills take "
            f"{share:.0%} of a colocated replica's ITL"
            if self.pays
            else f"does not pay: prompts of {self.input_tokens:,} tokens for answers of {self.output_tokens:,}; "
            f"prefills take only {share:.0%} of a colocated replica's ITL (it pays from a {PAYS_ITL_GAIN:g}× gain)"
        )
        c = self.colocated
        return (
            f"{head} · ITL {self.itl_seconds * 1000:.1f} ms vs {c.itl_seconds * 1000:.1f} ms colocated · "
            f"TTFT {self.ttft_seconds:.3g} s (with {self.kv_transfer_seconds * 1000:.1f} ms of KV transfer) vs "
            f"{c.ttft_seconds:.3g} s · {_usd(self.usd_per_million_output_tokens)} vs "
            f"{_usd(c.usd_per_million_output_tokens)} per 1M output tokens, at "
            f"{self.prefill_replicas_per_decode_replica:.2g} prefill replica(s) per decode replica"
        )


def _usd(value: float | None) -> str:
    return f"${value:,.2f}" if value is not None else "no price"


def kv_transfer_seconds(prefill: Sizing, decode: Sizing, input_tokens: int) -> float:
    """One prompt's KV cache (every layer, every head) from a prefill replica to a decode replica, at the
    slower of the two instances' EFA bandwidth."""
    known = instance_types()
    gbps = min(known[s.placement.instance_type].network_gbps for s in (prefill, decode))
    return input_tokens * decode.memory.kv_bytes_per_token / (gbps / 8 * 1e9 * EFA_EFFICIENCY)


def estimate(
    prefill: Sizing,
    decode: Sizing,
    max_replicas: tuple[int, int],
) -> DisaggregationEstimate | None:
    """The disaggregated figures from each role's sized placement and (prefill, decode) most replicas; None where
    the throughput model has none."""
    p, d = prefill.throughput, decode.throughput
    if p is None or d is None:
        return None
    step, batch = d.estimate.decode_step_seconds, d.estimate.batch
    prefill_s = p.estimate.prefill_seconds
    transfer = kv_transfer_seconds(prefill, decode, d.input_tokens)
    # A decode replica finishes batch requests every output_tokens steps; each needed one prefill.
    requests_per_second = batch / (d.output_tokens * step)
    ratio = requests_per_second * prefill_s
    hourly = (decode.placement.hourly_usd_per_replica, prefill.placement.hourly_usd_per_replica)
    usd = None
    if hourly[0] is not None and hourly[1] is not None:
        tokens_per_hour = batch / step * 3600
        usd = (hourly[0] + ratio * hourly[1]) / tokens_per_hour * 1e6
    return DisaggregationEstimate(
        input_tokens=d.input_tokens,
        output_tokens=d.output_tokens,
        batch=batch,
        prefill_seconds=prefill_s,
        kv_transfer_seconds=transfer,
        ttft_seconds=prefill_s + transfer + step,
        itl_seconds=step,
        prefill_replicas_per_decode_replica=ratio,
        usd_per_million_output_tokens=usd,
        colocated=Colocated(d.estimate.ttft_seconds, d.estimate.itl_seconds, d.usd_per_million_output_tokens),
        max_replicas=max_replicas,
    )
