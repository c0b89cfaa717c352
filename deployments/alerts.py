"""Alerts to a webhook: the notification block and the automation of infra/automations/regression-alerts.yaml.

Run against the Prefect API in PREFECT_API_URL (and its credentials), once per server:

    python deployments/alerts.py --webhook-url https://hooks.slack.com/services/...

Running it again points the alerts at the new URL; it never adds a second automation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from prefect.automations import Automation
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client

AUTOMATION = Path(__file__).resolve().parents[1] / "infra" / "automations" / "regression-alerts.yaml"
BLOCK = "diffbench-alerts"


def configure(webhook_url: str) -> str:
    """Save the webhook block and (re)create the automation that uses it; return the automation's id."""
    block = CustomWebhookNotificationBlock(name=BLOCK, url=webhook_url,
                                           json_data={"text": "{{subject}}\n{{body}}"})
    block_id = block.save(BLOCK, overwrite=True)
    spec = yaml.safe_load(AUTOMATION.read_text())
    for action in spec["actions"]:
        action["block_document_id"] = str(block_id)
    with get_client(sync_client=True) as client:
        for existing in client.read_automations_by_name(spec["name"]):
            client.delete_automation(existing.id)
    return str(Automation.model_validate(spec).create().id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alerts.py", description=__doc__.splitlines()[0])
    parser.add_argument("--webhook-url", required=True, help="where alerts are POSTed (Slack or any JSON webhook)")
    args = parser.parse_args(argv)
    print(f"automation {configure(args.webhook_url)}: alerts go to the webhook block {BLOCK!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
