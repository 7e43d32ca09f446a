from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from attribution import services
from attribution.methods import MethodError
from attribution.models import Injection
from tracing.management.commands._arguments import check_options, whole
from tracing.management.commands._pure_json import PureJsonMixin
from tracing.models import Outcome, Project, Trace

# The campaign form's bounds (``CampaignForm``) and the columns' (max_tokens: a positive bigint; max_cost: 10 digits,
# 4 decimals). A budget is spent once the campaign's count reaches it, so a budget of 0 would stop the campaign before
# its first replay: every budget is at least one replay, one token, one hundredth of a cent.
MAX_FAULTS_PER_TRACE = 20
MAX_REPLAYS = 1_000_000
MAX_TOKENS = 2**63 - 1
MIN_COST, MAX_COST = 0.0001, 999_999.9999


def _dollars(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{value!r} is not an amount of dollars") from None
    if not math.isfinite(number) or not MIN_COST <= number <= MAX_COST:
        raise argparse.ArgumentTypeError(f"must be between ${MIN_COST} and ${MAX_COST:,}, not {value}")
    return number


CHECKED: dict[str, Callable[[Any], Any]] = {
    "faults_per_trace": whole(1, MAX_FAULTS_PER_TRACE),
    "seed": whole(0, 10**9),
    "max_replays": whole(1, MAX_REPLAYS),
    "max_tokens": whole(1, MAX_TOKENS),
    "max_cost": _dollars,
}


class Command(PureJsonMixin, BaseCommand):
    help = (
        "Break successful traces on purpose: put one fault into one step at a time, replay the run, and keep each "
        "injection that turns success into failure as a new trace labelled at the fault (source: injected). "
        "Sandbox runs replay offline; other traces replay through the project's replay hook or model."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True)
        parser.add_argument(
            "--traces", default="", help="comma-separated trace ids (default: every successful trace)"
        )
        parser.add_argument(
            "--faults-per-trace",
            type=CHECKED["faults_per_trace"],
            default=3,
            help=f"1 to {MAX_FAULTS_PER_TRACE}",
        )
        parser.add_argument("--seed", type=CHECKED["seed"], default=0)
        parser.add_argument(
            "--writer",
            choices=["perturb", "llm"],
            default="perturb",
            help="how faults are written into real traces: offline perturbations or the project's model",
        )
        parser.add_argument(
            "--max-replays",
            type=CHECKED["max_replays"],
            default=None,
            help=f"budget: 1 to {MAX_REPLAYS:,} replays",
        )
        parser.add_argument(
            "--max-tokens", type=CHECKED["max_tokens"], default=None, help="budget: tokens (>= 1)"
        )
        parser.add_argument(
            "--max-cost",
            type=CHECKED["max_cost"],
            default=None,
            help=f"budget: dollars ({MIN_COST} to {MAX_COST:,})",
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        check_options(options, CHECKED)  # again for call_command's keyword options, which skip ``type``
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(f"no project named {options['project']!r}")
        if options["max_cost"] is not None and (
            refusal := services.campaign_cost_cap_refusal(project=project)
        ):
            raise CommandError(
                f"--max-cost: {refusal}: give its prices on the model page, or use --max-tokens"
            )
        if options["traces"]:
            try:
                ids = [int(x) for x in options["traces"].split(",") if x.strip()]
            except ValueError:
                raise CommandError("--traces takes comma-separated integer ids") from None
        else:
            ids = list(
                Trace.objects.filter(project=project, outcome=Outcome.SUCCEEDED).values_list("pk", flat=True)
            )
        try:
            campaign = services.campaign_create(
                project=project,
                trace_ids=ids,
                faults_per_trace=options["faults_per_trace"],
                seed=options["seed"],
                writer=options["writer"],
                max_replays=options["max_replays"],
                max_tokens=options["max_tokens"],
                max_cost=options["max_cost"],
                description="command line",
                enqueue=False,
            )
        except MethodError as exc:
            raise CommandError(str(exc)) from None
        campaign = services.campaign_execute_inline(campaign=campaign)
        kept = list(
            Injection.objects.filter(campaign=campaign, status="kept")
            .order_by("pk")
            .values("origin_id", "step_index", "agent_name", "fault_kind", "result_trace_id")
        )
        summary = {
            "campaign": campaign.pk,
            "status": campaign.status,
            "planned": campaign.total,
            "kept": campaign.kept,
            "failed": campaign.failed,
            "replays": campaign.replays,
            "tokens": campaign.tokens,
            "cost": float(campaign.cost),
            "stop_reason": campaign.stop_reason,
            "notes": campaign.params.get("notes", []),
            "cases": kept,
        }
        if options["json"]:
            self.stdout.write(json.dumps(summary))
            return
        for note in summary["notes"]:
            self.stderr.write(f"Note: {note}.")
        self.stdout.write(
            f"Campaign {campaign.pk}: {campaign.get_status_display()}. {campaign.kept} of "
            f"{campaign.total} injections broke their run ({campaign.replays} replays"
            f"{f', {campaign.failed} failed' if campaign.failed else ''})"
            f"{f'; {campaign.stop_reason}' if campaign.stop_reason else ''}."
        )
        for case in kept:
            self.stdout.write(
                f"  trace {case['result_trace_id']}: {case['fault_kind']} at step {case['step_index']} "
                f"({case['agent_name']}) of trace {case['origin_id']}"
            )
