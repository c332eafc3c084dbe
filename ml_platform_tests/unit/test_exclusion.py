"""`ml-platform exclude` (issue 20): a person takes a bad batch out of training, and puts it back."""

import dagster as dg

from ml_platform.cli.main import main
from ml_platform.control.exclusion import observation
from ml_platform.core import audit, catalog, policy
from ml_platform.core.approval import os_user
from ml_platform_tests.conftest import dagster_instance


def _batches(settings):
    d = settings.model_dir("churn")
    catalog.update_record(d, "a.csv-11111111", file="/landing/a.csv", arrival=1.0, status="validated", labelled=True)
    catalog.update_record(d, "b.csv-22222222", file="/landing/b.csv", arrival=2.0, status="validated", labelled=True)
    catalog.update_record(d, "b.csv-33333333", file="/x/b.csv", arrival=3.0, status="validated", labelled=True)
    return d


def test_exclude_takes_a_batch_out_of_training_and_undo_puts_it_back(settings, config_dir, capsys):
    d = _batches(settings)
    cfg = str(config_dir / "ml_platform.yaml")
    assert (
        main(["--config", cfg, "exclude", "--batch", "a.csv", "--reason", "churned=2 on 30 rows", "--by", "ann"]) == 0
    )
    assert "batch a.csv-11111111 is out of training (churned=2 on 30 rows)" in capsys.readouterr().out
    rec = catalog.read_record(d, "a.csv-11111111")
    assert rec.excluded["reason"] == "churned=2 on 30 rows" and rec.excluded["by"] == "ann"
    assert not rec.trainable and rec.is_validated  # its verdicts stay; training skips it
    assert [r.partition for r in catalog.read_records(d) if r.trainable] == ["b.csv-22222222", "b.csv-33333333"]
    # the weekly schedule's "new data" does not count it either
    only_a = [r for r in catalog.read_records(d) if r.partition.startswith("a.")]
    assert "no labelled batch" in policy.scheduled(only_a, settings.models["churn"], champion=None).reason
    assert main(["--config", cfg, "exclude", "--batch", "a.csv-11111111", "--undo"]) == 0
    assert catalog.read_record(d, "a.csv-11111111").trainable
    # Both are in the audit (decisions: the champion did not move), which status shows.
    entries = audit.read(d)
    assert [(e.kind, e.actor, e.moved) for e in entries] == [("exclude", "ann", False), ("include", os_user(), False)]
    assert "batch a.csv-11111111 out of training: churned=2 on 30 rows" in entries[0].reason
    assert "retrain" not in policy.decide(rec, [], settings.models["churn"], has_champion=True).reason
    assert policy.decide(rec, [], settings.models["churn"], has_champion=True).reason.startswith(
        "excluded from training by ann"
    )
    with dagster_instance() as instance:  # the UI's copy, on the batch's partition
        instance.add_dynamic_partitions("churn_batches", [rec.partition])
        instance.report_runless_asset_event(observation("churn", rec))
        ev = instance.fetch_observations(dg.AssetKey(["churn", "validated_batch"]), limit=1).records[0]
        assert ev.event_log_entry.asset_observation.metadata["exclusion_reason"].value == "churned=2 on 30 rows"


def test_an_unknown_or_ambiguous_batch_is_refused_naming_the_choices(settings, config_dir, capsys):
    _batches(settings)
    cfg = str(config_dir / "ml_platform.yaml")
    assert main(["--config", cfg, "exclude", "--batch", "b.csv"]) == 1
    assert "2 batches came from a file named 'b.csv'" in capsys.readouterr().err
    assert main(["--config", cfg, "exclude", "--batch", "nope"]) == 1
    assert "no batch 'nope'" in capsys.readouterr().err
