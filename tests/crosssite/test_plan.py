"""The cross-site plan (bids_msseg/crosssite/plan.py): training sets, arms, the test split."""

from __future__ import annotations

import pytest

from bids_msseg.cli import parser as cli_parser
from bids_msseg.crosssite import plan as plan_module
from bids_msseg.crosssite.plan import Arm, arms, build_plan, split_test, training_sets
from bids_msseg.errors import NoInputError, UsageError
from bids_msseg.settings import TrainSettings

# ------------------------------------------------------------------------------------ plan


def test_training_sets() -> None:
    assert training_sets(["B", "A"], ["single", "leave-one-out", "all"]) == [("A",), ("B",), ("A", "B")]
    three = training_sets(["A", "B", "C"], ["single", "leave-one-out", "all"])
    assert three == [("A",), ("B",), ("C",), ("A", "B"), ("A", "C"), ("B", "C"), ("A", "B", "C")]
    assert training_sets(["A", "B", "C"], ["all-pairs"]) == [("A", "B"), ("A", "C"), ("B", "C")]
    assert training_sets(["A", "B", "C"], ["all"]) == [("A", "B", "C")]
    assert training_sets(["A", "B", "C"], ["merged"]) == three[3:]
    with pytest.raises(UsageError):
        training_sets(["A", "B"], ["everything"])


def test_arms_and_parser_choices_agree() -> None:
    assert arms(None, None, []) == [Arm("UnetPlusPlus", "quantile")]
    assert [a.label for a in arms("Unet", None, ["normalization", "architecture"])] == [
        "Unet-quantile", "Unet-linear", "UnetPlusPlus-quantile"]
    assert arms(None, "linear", ["normalization"])[1] == Arm("UnetPlusPlus", "quantile", "normalization")
    assert [a.label for a in arms(None, None, ["context", "sampling"])] == [
        "UnetPlusPlus-quantile", "UnetPlusPlus-quantile-context-1", "UnetPlusPlus-quantile-lesion-sampling-lesion"]
    two_and_a_half_d = TrainSettings(context=2, lesion_sampling="lesion")
    assert [a.overrides for a in arms(None, None, ["context", "sampling"], two_and_a_half_d)] == [
        (), (("context", 0),), (("lesion_sampling", "slice"),)]
    assert arms(None, None, ["intensity"])[1].overrides == (("augment_intensity", 0.5),)
    assert arms(None, None, ["intensity"], TrainSettings(augment_intensity=0.3))[1].overrides == (
        ("augment_intensity", 0.0),)
    assert cli_parser.CROSSSITE_COMBINATIONS == plan_module.COMBINATIONS
    assert cli_parser.CROSSSITE_ABLATIONS == plan_module.ABLATIONS


def test_split_test_is_by_subject_and_seeded(make_scan) -> None:
    scans = [make_scan(f"{i:02d}", s) for i in range(1, 7) for s in ("1", "2")]
    for seed in range(5):
        test, dev = split_test(scans, 0.3, seed)
        assert sorted(test + dev) == sorted(s.key for s in scans) and not set(test) & set(dev)
        subjects = {k.split("__")[1].split("_")[0] for k in test}
        assert len(subjects) == 2 and not subjects & {k.split("__")[1].split("_")[0] for k in dev}  # round(0.3 * 6)
        assert (test, dev) == split_test(scans, 0.3, seed)
    assert len({tuple(split_test(scans, 0.3, seed)[0]) for seed in range(8)}) > 1
    # at least one test subject, never all
    assert len(split_test(scans[:4], 0.01, 0)[0]) == 2 and split_test(scans[:4], 0.99, 0)[1]


def test_holdout_site_tests_each_model_on_the_sites_it_did_not_train_on(make_scan) -> None:
    scans = [make_scan("a1"), *(make_scan(f"b{i}") for i in (1, 2)), *(make_scan(f"c{i}", s) for i in (1, 2, 3)
                                                                      for s in ("1", "2"))]
    sites = {s.key: s.run.subject[0].upper() for s in scans}
    given = [(Arm(), "/models/default_model")]
    plan = build_plan(scans, sites, ["single", "leave-one-out", "all"], [Arm()], 0.3, 0.2, 0, holdout="site",
                      given=given)
    assert plan.sites == plan.test and sorted(plan.sites) == ["A", "B", "C"]  # one subject is enough to test on
    sets = [e.train_sites for e in plan.experiments if not e.model]
    assert ("A",) not in sets and ("A", "B", "C") not in sets  # one subject cannot train; "all" has no test
    assert sets == [("B",), ("C",), ("A", "B"), ("A", "C"), ("B", "C")]
    for e in plan.experiments[:-1]:
        tested = set(plan.tested(e))
        assert tested and all(sites[k] not in e.train_sites for k in tested)
        assert tested == {k for k, s in sites.items() if s not in e.train_sites}
        assert set(e.train + e.val) == {k for k, s in sites.items() if s in e.train_sites}
    model = plan.experiments[-1]
    assert model.model and model.train_set == "model:default_model" and not model.train
    assert model.id == "UnetPlusPlus-quantile__model-default_model" and len(plan.tested(model)) == len(scans)
    with pytest.raises(NoInputError):  # the default holdout needs three subjects a site: only C has them
        build_plan(scans, sites, ["leave-one-out"], [Arm()], 0.3, 0.2, 0)
    with pytest.raises(UsageError):
        build_plan(scans, sites, ["all"], [Arm()], 0.3, 0.2, 0, holdout="everything")


def test_train_only_scans_join_every_trained_experiment_and_nothing_else(make_scan) -> None:
    scans = [make_scan(f"{site}{i}") for site in "ab" for i in (1, 2, 3)]
    sites = {s.key: s.run.subject[0].upper() for s in scans}
    extra = ["synth__sub-x1_FLAIR", "synth__sub-x2_FLAIR"]
    plan = build_plan(scans, sites, ["leave-one-out"], [Arm()], 0.3, 0.2, 0, holdout="site",
                      given=[(Arm(), "/models/m")], train_only=extra[::-1])
    assert plan.train_only == extra and plan.to_json()["train_only"] == extra
    trained = [e for e in plan.experiments if not e.model]
    assert len(trained) == 2 and all(set(extra) <= set(e.train) and not set(extra) & set(e.val) for e in trained)
    assert not set(extra) & set(plan.test_scans) and not set(extra) & set(plan.site_of)
    assert all(not set(extra) & set(plan.tested(e)) for e in plan.experiments)
    assert "train_only" not in build_plan(scans, sites, ["leave-one-out"], [Arm()], 0.3, 0.2, 0,
                                          holdout="site").to_json()  # older studies' plans are unchanged
    with pytest.raises(UsageError, match="train-only"):
        build_plan(scans, sites, ["leave-one-out"], [Arm()], 0.3, 0.2, 0, holdout="site", train_only=[scans[0].key])


def test_an_arms_overrides_reach_its_training_and_its_spec(tmp_path, make_scan, monkeypatch) -> None:
    """The sampling arm trains with the other --lesion-sampling; its spec differs from the baseline's."""
    from bids_msseg.crosssite import run as run_module
    from bids_msseg.crosssite.plan import Experiment
    from bids_msseg.settings import Options

    seen = {}
    monkeypatch.setattr(run_module.bids_training, "train_and_export",
                        lambda options, settings, *a, **k: seen.update(sampling=settings.lesion_sampling))
    scans = {s.key: s for s in (make_scan("01"), make_scan("02"))}
    options = Options(bids_dir=tmp_path, output_dir=tmp_path / "out", analysis_level="group")
    settings = TrainSettings(lesion_sampling="lesion")
    base, sampling = arms(None, None, ["sampling"], settings)
    for arm in (base, sampling):
        experiment = Experiment(arm, ("A",), train=(next(iter(scans)),), val=(list(scans)[1],))
        run_module._train(experiment, scans, {"d": "d"}, settings, options, tmp_path / "out", tmp_path / "w")
        assert seen["sampling"] == ("lesion" if arm is base else "slice")
    specs = [run_module.experiment_spec(Experiment(a, ("A",)), settings, options) for a in (base, sampling)]
    assert "overrides" not in specs[0] and specs[1]["overrides"] == {"lesion_sampling": "slice"}
    assert "augment_intensity" not in specs[0]["recipe"]  # studies made before the option stay valid
    with_intensity = TrainSettings(augment_intensity=0.5)
    assert run_module.experiment_spec(Experiment(base, ("A",)), with_intensity, options)["recipe"][
        "augment_intensity"] == 0.5
    assert not {"synthetic_pool", "average_from", "lesion_balance"} & set(specs[0]["recipe"])
    assert run_module.experiment_spec(Experiment(base, ("A",)), TrainSettings(lesion_balance=0.5), options)["recipe"][
        "lesion_balance"] == 0.5
    assert run_module.experiment_spec(Experiment(base, ("A",)), TrainSettings(average_from=2), options)["recipe"][
        "average_from"] == 2
    with_pool = run_module.experiment_spec(Experiment(base, ("A",)), TrainSettings(synthetic_pool=tmp_path), options)
    assert with_pool["recipe"]["synthetic_pool"] == str(tmp_path.resolve())
    assert with_pool["recipe"]["synthetic_fraction"] == 0.5
