"""The team's own assets and automation, next to the platform's: the platform claims only its
own assets, resource keys and jobs."""

import dagster as dg


@dg.asset(group_name="reports", automation_condition=dg.AutomationCondition.on_cron("0 6 * * *"))
def weekly_report() -> dict:
    return {"status": "ok"}


team_automation = dg.AutomationConditionSensorDefinition(
    "team_automation", target=dg.AssetSelection.groups("reports"), default_status=dg.DefaultSensorStatus.RUNNING
)
