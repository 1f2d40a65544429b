"""Tests for idn_tf.config recipes and the flags/ flagfiles (docs/method.md §3)."""

import dataclasses
import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from idn_tf import config as config_lib, methods

TANAKA, PENCIL = methods.get("tanaka"), methods.get("pencil")
from idn_tf.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# docs/method.md §3, "CIFAR-10 / CIFAR-100" column, written out independently of config.RECIPES.
PAPER_CIFAR = dict(arch="resnet32", epochs=160, batch_size=256, momentum=0.9, weight_decay=1e-4,
                   lr=0.05, lr_decay_epochs=[40, 80, 120], lr_decay_factor=0.1, eta_init=0.01,
                   eta_start_epoch=35, eta_every=5, eta_rule="paper", eta_eps=1e-4,
                   eta_min=0.0, augment="pad_crop_flip", crop_padding=4,
                   normalize="subtract_mean")


def dry_run(*flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "idn_tf.train", "--dry_run", *flags],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.e2e
@pytest.mark.parametrize("dataset, eta_lr, noise", [("cifar100", 0.5, "mlp"),
                                                    ("cifar10", 0.7, "kmeans")])
def test_dataset_alone_resolves_to_the_papers_recipe(dataset, eta_lr, noise):
    printed = dry_run(f"--dataset={dataset}")
    for name, value in {**PAPER_CIFAR, "eta_lr": eta_lr, "noise": noise}.items():
        assert printed[name] == value, name
    assert printed["run_dir"] == os.path.join("runs", f"{dataset}-{noise}-0")


def test_run_names_keep_the_papers_rows_apart():
    names = {config_lib.resolve({"dataset": "cifar10", "noise": "ccn", "noise_rate": r}).run_dir
             for r in (0.1, 0.2, 0.3, 0.4, 0.5)}
    assert len(names) == 5 and os.path.join("runs", "cifar10-ccn0.2-0") in names
    keys = {config_lib.resolve({"dataset": "cifar10_n", "noisy_label_key": k}).run_dir
            for k in ("worst", "aggregate")}
    assert keys == {os.path.join("runs", "cifar10_n-worst-none-0"),
                    os.path.join("runs", "cifar10_n-aggregate-none-0")}


def test_method_names_the_run_folder_unless_it_is_the_method():
    base = {"dataset": "cifar10", "noise": "ccn", "noise_rate": 0.4, "seed": 2}
    names = {m: config_lib.resolve({**base, "method": m}).run_dir for m in methods.names()}
    assert names["idn"] == os.path.join("runs", "cifar10-ccn0.4-2")
    assert names["forward"] == os.path.join("runs", "cifar10-ccn0.4-forward-2")
    assert len(set(names.values())) == len(methods.names())
    c1m = config_lib.resolve({"dataset": "clothing1m", "data_dir": "x", "method": "forward"})
    assert c1m.run_dir == os.path.join("runs", "clothing1m-forward-0")


def test_the_registry_holds_the_nine_methods_and_each_field_once():
    assert methods.names() == ("idn", "ce", "forward", "bootstrap_soft", "bootstrap_hard",
                               "ldmi", "coteaching", "tanaka", "pencil", "elr", "sop",
                               "dividemix")
    owners = [f for m in methods.all_methods() for f in m.fields]
    assert len(owners) == len(set(owners))
    # Every method's own fields are configuration fields with a flag of the same name.
    assert set(owners) <= set(config_lib.field_names())
    assert not set(owners) & {f.name for f in dataclasses.fields(config_lib.Config)}


def test_semantic_dict_keeps_only_the_methods_own_settings():
    def semantic(method, **changes):
        return config_lib.resolve({"method": method, **changes}).semantic_dict()
    # The method's η settings concern it alone; each baseline's settings concern it alone.
    assert semantic("forward") == semantic("forward", eta_lr=0.9, dmi_lr=0.1,
                                           bootstrap_soft_beta=0.5)
    assert semantic("forward") != semantic("forward", forward_percentile=90.0)
    assert semantic("ldmi") != semantic("ldmi", dmi_lr=1e-3)
    assert semantic("idn") == semantic("idn", dmi_lr=1e-3, bootstrap_hard_beta=0.5)
    assert semantic("idn") != semantic("idn", eta_lr=0.9)
    # The method's folders look as they did before --method existed (restarts still match).
    assert "method" not in semantic("idn") and semantic("ce")["method"] == "ce"
    # Stage 1 is the same whatever the method.
    stage1 = {config_lib.resolve({"method": m, "eta_lr": 0.9}).stage1_dict() ==
              config_lib.resolve({"method": "idn"}).stage1_dict() for m in methods.names()}
    assert stage1 == {True}
    assert (config_lib.resolve({"method": "ce", "lr": 0.1}).stage1_dict()
            != config_lib.resolve({"method": "ce"}).stage1_dict())


def test_a_given_transition_matrix_counts_by_content(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("1,0\n0,1\n")
    cfg = config_lib.resolve({"method": "forward", "transition_matrix": str(path)})
    before, stage1 = cfg.semantic_dict(), cfg.stage1_dict()  # as a run folder saves them
    path.write_text("0.5,0.5\n0,1\n")  # same path, other matrix
    assert cfg.semantic_dict() != before
    assert cfg.stage1_dict() == stage1


def test_stage_one_is_trained_only_when_the_method_needs_it(tmp_path):
    given = tmp_path / "t.npy"
    given.write_bytes(b"")
    def needs_stage1(**fields):
        cfg = config_lib.resolve(fields)
        return methods.get(cfg.method).needs_stage1(cfg)
    needs = {m: needs_stage1(method=m) for m in methods.names()}
    assert needs == {"idn": True, "ce": True, "forward": True, "bootstrap_soft": False,
                     "bootstrap_hard": False, "ldmi": True, "coteaching": False,
                     "tanaka": False, "pencil": False, "elr": False, "sop": False,
                     "dividemix": False}
    assert not needs_stage1(method="forward", transition_matrix=str(given))
    assert not needs_stage1(method="forward", transition_matrix="true")
    # Co-teaching trains stage 1 only to estimate τ from it.
    for tau in ("actual", "0.2", "0", "auto"):
        assert not needs_stage1(method="coteaching", coteaching_tau=tau)
    assert needs_stage1(method="coteaching", coteaching_tau="estimate")


@pytest.mark.parametrize("fields, rule", [
    # Synthetic noise and CIFAR-N: every clean training label is known, τ is measured.
    ({"noise": "ccn"}, "actual"),
    ({"dataset": "cifar10_n"}, "actual"),
    # An npz's clean labels are optional: τ is estimated from stage 1.
    ({"dataset": "npz", "npz_path": "x.npz"}, "estimate"),
    # Clothing1M: the recipe's τ, the dataset's noise rate (Xiao et al. 2015).
    ({"dataset": "clothing1m", "data_dir": "/data/clothing1m"}, "0.3846"),
])
def test_coteaching_tau_auto(fields, rule):
    cfg = config_lib.resolve({"method": "coteaching", **fields})
    method = methods.get("coteaching")
    assert method.tau_rule(cfg) == rule
    assert method.needs_stage1(cfg) == (rule == "estimate")
    if rule == "actual":  # τ is the run's measured rate, and says how it was chosen
        run = methods.Run(cfg, None, np.zeros(4, np.int64), 0.375, None)
        tau, how = method.forget_rate(run)
        assert tau == 0.375 and how.startswith("auto -> actual")


def test_coteaching_tau_estimate_reads_forward_percentile_and_other_taus_do_not():
    def semantic(**fields):
        return config_lib.resolve({"method": "coteaching", **fields}).semantic_dict()
    assert semantic(coteaching_tau="estimate", forward_percentile=90) != semantic(
        coteaching_tau="estimate")
    assert semantic(forward_percentile=90) == semantic()  # auto: measured on digits
    assert semantic(coteaching_tau="0.3", forward_percentile=90) == semantic(coteaching_tau="0.3")
    assert semantic(coteaching_tau="0.3") != semantic(coteaching_tau="0.2")
    # Another method's settings are not part of this one's restart check.
    assert semantic(tanaka_alpha=2.0, pencil_lambda=10.0) == semantic()
    tanaka = config_lib.resolve({"method": "tanaka"}).semantic_dict()
    assert "tanaka_alpha" in tanaka and "coteaching_tau" not in tanaka
    assert "pencil_lambda" not in tanaka and "eta_lr" not in tanaka


def test_semantic_dict_ignores_settings_the_run_does_not_use():
    ccn = config_lib.resolve({"dataset": "cifar10", "noise": "ccn", "noise_rate": 0.2})
    other = config_lib.resolve({"dataset": "cifar10", "noise": "ccn", "noise_rate": 0.2,
                                "kmeans_clusters": 50, "mlp_epochs": 3})
    assert ccn.semantic_dict() == other.semantic_dict()
    assert "kmeans_clusters" not in ccn.semantic_dict() and "noise_rate" in ccn.semantic_dict()
    changed = config_lib.resolve({"dataset": "cifar10", "noise": "ccn", "noise_rate": 0.3})
    assert changed.semantic_dict() != ccn.semantic_dict()
    kmeans = config_lib.resolve({"dataset": "cifar10"}).semantic_dict()
    assert kmeans["kmeans_clusters"] == 10 and kmeans["noise_features"] == "resnet50"


@pytest.mark.parametrize("fields, used, unused", [
    ({}, ("eta_lr", "kmeans_clusters", "noise_feature_dims", "run_dir", "model_name"),
     ("dividemix_lambda_u", "elr_beta", "noise_rate", "mlp_epochs", "data_dir", "download",
      "image_size", "subset_fraction", "test_fraction", "crop_padding", "psi_folds", "dry_run")),
    ({"method": "dividemix", "noise": "ccn"}, ("dividemix_lambda_u", "noise_rate"),
     ("eta_lr", "audit_folds", "kmeans_clusters", "noise_features")),
    ({"method": "forward", "transition_matrix": "true"}, ("transition_matrix",),
     ("forward_percentile", "eta_lr")),
    ({"method": "coteaching", "coteaching_tau": "estimate"},
     ("coteaching_tau", "forward_percentile"), ("transition_matrix",)),
    ({"psi_source": "crossval"}, ("psi_folds", "psi_source"), ()),
    ({"dataset": "folder", "data_dir": "photos", "noise": "none"},
     ("data_dir", "test_fraction", "image_size", "class_names", "val_fraction"),
     ("augment", "kmeans_clusters", "subset_fraction", "npz_path", "download")),
    ({"dataset": "cifar10"}, ("data_dir", "download", "crop_padding", "noise_feature_size"),
     ("image_size", "class_names")),
    ({"export_dir": ""}, ("export_dir",), ("model_name", "export_classifier",
                                           "export_class_names")),
])
def test_used_dict_holds_the_fields_this_run_reads(fields, used, unused):
    """--dry_run's fields: the method's, the noise's and the dataset's (issue 29, point 7)."""
    cfg = config_lib.resolve(fields)
    printed = cfg.used_dict()
    assert set(used) <= set(printed) and not set(unused) & set(printed), sorted(printed)
    assert printed == {k: v for k, v in cfg.to_dict().items() if k in printed}


@pytest.mark.parametrize("method", methods.names())
def test_what_decides_a_run_is_part_of_what_it_reads(method):
    """semantic_dict (the restart check) is used_dict narrowed: no field it does not read."""
    for noise in ("kmeans", "ccn"):
        cfg = config_lib.resolve({"method": method, "noise": noise})
        derived = set(methods.derived_fields())
        assert set(cfg.semantic_dict()) - derived <= set(cfg.used_dict())
        assert len(cfg.used_dict()) < len(cfg.to_dict()) / 2


@pytest.mark.e2e
def test_dry_run_prints_the_fields_the_method_reads():
    idn = dry_run()
    assert idn["eta_lr"] == 0.3 and idn["method"] == "idn"
    assert not [k for k in idn if k.startswith(("dividemix_", "elr_"))]
    dividemix = dry_run("--method=dividemix")
    assert "dividemix_lambda_u" in dividemix and "eta_lr" not in dividemix


@pytest.mark.e2e
def test_explicit_flags_override_the_recipe():
    # 64 is also the digits default: it must still win over the recipe's 256.
    printed = dry_run("--dataset=cifar100", "--batch_size=64", "--eta_lr=0.3", "--noise=ccn")
    assert printed["batch_size"] == 64 and printed["eta_lr"] == 0.3 and printed["noise"] == "ccn"
    assert printed["epochs"] == 160  # the rest stays the recipe's


def test_digits_recipe_is_the_config_default():
    assert config_lib.resolve({}) == config_lib.Config()
    assert config_lib.resolve({"dataset": "digits"}) == config_lib.Config()


def test_resolve_rejects_unknown_names():
    with pytest.raises(config_lib.ConfigError, match="--dataset"):
        config_lib.resolve({"dataset": "imagenet"})
    with pytest.raises(config_lib.ConfigError, match="--colour"):
        config_lib.resolve({"colour": "red"})


@pytest.mark.parametrize("decays, epochs, late", [
    ((5, 10), 4, "5, 10"),  # issue 29: the folder recipe's decays in a 4-epoch run
    ((2, 5), 4, "5"), ((4,), 4, "4"),  # a decay after the last epoch takes effect in none
    ((3,), 4, None), ((), 1, None)])
def test_a_decay_the_run_never_reaches_is_a_warning(decays, epochs, late):
    warnings = config_lib.Config(lr_decay_epochs=decays, epochs=epochs).warnings()
    assert warnings == ([] if late is None else [
        f"--lr_decay_epochs: the decay after epoch {late} never takes effect with "
        f"--epochs={epochs}"])
    assert config_lib.Config().warnings() == []


def test_served_class_names_are_the_flags_else_the_datas():
    data_names = ("ant", "bee", "cow")
    default = config_lib.Config()
    assert default.served_class_names(data_names) == data_names
    given = config_lib.Config(export_class_names=["Ant", "Bee", "Cow"])
    assert given.export_class_names == ("Ant", "Bee", "Cow")
    assert given.served_class_names(data_names) == ("Ant", "Bee", "Cow")
    config_lib.check_data_fits(given, (8, 8, 1), data_names)
    # Only the export reads them: a restart with other names is the same run.
    assert given.semantic_dict() == default.semantic_dict()


@pytest.mark.parametrize("names, message", [
    (("a", "b", "a"), "--export_class_names: 'a' is already class 0"),
    (("a", "", "c"), "--export_class_names: class 1 has no name"),
    (("a", " ", "c"), "--export_class_names: class 1 has no name"),
    (("a", "b\nc", "d"), "--export_class_names: class 1's name 'b\\nc' holds a line break"),
    (("a", "b,c", "d"), "--export_class_names: 'b,c': a name cannot hold a comma"),
])
def test_export_class_names_must_be_distinct_non_empty_single_lines(names, message):
    with pytest.raises(config_lib.ConfigError) as error:
        config_lib.Config(export_class_names=names)
    assert str(error.value).startswith(message)


def test_export_class_names_must_name_each_class_of_the_data():
    with pytest.raises(config_lib.ConfigError,
                       match="--export_class_names: 2 name\\(s\\) for the 3 classes of digits"):
        config_lib.check_data_fits(config_lib.Config(export_class_names=("a", "b")), (8, 8, 1),
                                   ("0", "1", "2"))
    # Data names a SavedModel cannot hold stop an exporting run, which must name the classes.
    unservable = ("cat", "dog\nfox")
    with pytest.raises(config_lib.ConfigError, match="--export_class_names: the digits "
                                                     "classes' names cannot be served"):
        config_lib.check_data_fits(config_lib.Config(), (8, 8, 1), unservable)
    config_lib.check_data_fits(config_lib.Config(export_dir=""), (8, 8, 1), unservable)
    config_lib.check_data_fits(config_lib.Config(export_class_names=("cat", "dog")), (8, 8, 1),
                               unservable)


def test_flags_md_has_a_row_for_every_flag():
    from idn_tf import flagdefs
    with open(os.path.join(ROOT, "docs", "flags.md"), encoding="utf-8") as f:
        rows = re.findall(r"^\| `--(\w+)`", f.read(), flags=re.MULTILINE)
    assert len(rows) == len(set(rows))
    assert set(rows) == {flag.name for flag in
                         flagdefs.FLAGS.get_flags_for_module("idn_tf.flagdefs")}


def test_every_recipe_is_a_valid_config():
    for dataset in config_lib.RECIPES:
        extra = {"npz": {"npz_path": "x.npz"}, "clothing1m": {"data_dir": "c1m"},
                 "folder": {"data_dir": "photos"}}.get(dataset, {})
        assert config_lib.resolve({"dataset": dataset, **extra}).dataset == dataset
    assert set(config_lib.RECIPES) == set(config_lib.DATASETS)


def test_augmentations_match_the_pipeline():
    assert config_lib.AUGMENTATIONS == pipeline.AUGMENTATIONS


# ---------------------------------------------------------------------------------------
# flags/


def _config_from_flagfile(name, *extra):
    from idn_tf import flagdefs
    flagdefs.FLAGS.unparse_flags()
    cwd = os.getcwd()
    try:
        # Nested --flagfile paths are relative to the working directory, as for users.
        os.chdir(ROOT)
        flagdefs.FLAGS(["train", f"--flagfile=flags/{name}", *extra])
        return flagdefs.config_from_flags()
    finally:
        os.chdir(cwd)
        flagdefs.FLAGS.unparse_flags()


# File datasets need the user's folder; the tests give one on the command line.
DATA_DIR = ("--data_dir=/data/clothing1m",)


@pytest.mark.parametrize("name, dataset", [("paper_cifar10.cfg", "cifar10"),
                                           ("paper_cifar100.cfg", "cifar100"),
                                           ("paper_clothing1m.cfg", "clothing1m")])
def test_paper_base_flagfiles_equal_the_recipes(name, dataset):
    extra = DATA_DIR if dataset == "clothing1m" else ()
    explicit = {"dataset": dataset, **({"data_dir": "/data/clothing1m"} if extra else {})}
    assert _config_from_flagfile(name, *extra) == config_lib.resolve(explicit)


CLOTHING1M_ROWS = {
    "table3_clothing1m_row7.cfg": ({}, "74.02"),
    "table3_clothing1m_row8.cfg": ({"clean_train": "mix"}, "77.55"),
    "table3_clothing1m_row10.cfg": ({"finetune_clean_epochs": 5, "finetune_lr": 5e-4}, "80.68"),
}


@pytest.mark.parametrize("name", sorted(CLOTHING1M_ROWS))
def test_clothing1m_row_flagfiles(name):
    changes, expected = CLOTHING1M_ROWS[name]
    cfg = _config_from_flagfile(name, *DATA_DIR)
    recipe = config_lib.resolve({"dataset": "clothing1m", "data_dir": "/data/clothing1m"})
    # docs/method.md §3: batch 32, 15 epochs, lr 5e-3 ÷10 every 5 epochs, coupled weight decay 1e-3,
    # η updated every epoch from the 2nd, α₁ 0.05, η_init 0.01; ImageNet ResNet-50.
    assert (cfg.arch, cfg.backbone_weights, cfg.batch_size, cfg.epochs, cfg.lr,
            cfg.lr_decay_epochs, cfg.lr_decay_factor, cfg.weight_decay, cfg.eta_start_epoch,
            cfg.eta_every, cfg.eta_lr, cfg.eta_init, cfg.noise) == (
        "resnet50", "imagenet", 32, 15, 5e-3, (5, 10), 0.1, 1e-3, 2, 1, 0.05, 0.01, "none")
    assert cfg == config_lib.resolve({"dataset": "clothing1m", "data_dir": "/data/clothing1m",
                                      **changes})
    assert cfg.semantic_dict() == {**recipe.semantic_dict(), **changes}
    with open(os.path.join(ROOT, "flags", name)) as f:
        text = "".join(line for line in f if line.startswith("#"))
    assert f"python -m idn_tf.train --flagfile=flags/{name} --data_dir=" in text
    assert "Expected test accuracy (paper" in text and expected in text
    assert "Expected time" in text and "GPU" in text


def test_finetuning_continues_row_7_in_its_folder():
    row7, row10 = (_config_from_flagfile(f"table3_clothing1m_row{r}.cfg", *DATA_DIR)
                   for r in (7, 10))
    assert row7.run_dir == row10.run_dir == os.path.join("runs", "clothing1m-0")
    changed = {k for k in set(row7.semantic_dict()) | set(row10.semantic_dict())
               if row7.semantic_dict().get(k) != row10.semantic_dict().get(k)}
    assert changed == {"finetune_clean_epochs", "finetune_lr"}


ROWS = {
    "table1_cifar100_idn.cfg": dict(dataset="cifar100", noise="mlp", eta_lr=0.5),
    "table1_cifar10_idn.cfg": dict(dataset="cifar10", noise="kmeans", eta_lr=0.7),
    **{f"table2_cifar10_ccn_{r}.cfg": dict(dataset="cifar10", noise="ccn", noise_rate=r,
                                            eta_lr=0.7) for r in (0.1, 0.2, 0.3, 0.4, 0.5)},
    "cifar10n_worst.cfg": dict(dataset="cifar10_n", noise="none", noisy_label_key="worst",
                               eta_lr=0.7),
    "cifar100n.cfg": dict(dataset="cifar100_n", noise="none", noisy_label_key="noisy",
                          eta_lr=0.5),
}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_row_flagfiles(name):
    cfg = _config_from_flagfile(name)
    # The flagfile and the plain flags of its row name the same run (same folder, and a
    # restart with either form is accepted).
    plain = config_lib.resolve({k: v for k, v in ROWS[name].items() if k != "eta_lr"})
    assert cfg.run_dir == plain.run_dir and cfg.semantic_dict() == plain.semantic_dict()
    for field, value in {**PAPER_CIFAR, **ROWS[name]}.items():
        actual = getattr(cfg, field)
        assert (list(actual) if isinstance(actual, tuple) else actual) == value, field
    with open(os.path.join(ROOT, "flags", name)) as f:
        header = [line for line in f if line.startswith("#")]
    text = "".join(header)
    assert f"python -m idn_tf.train --flagfile=flags/{name}" in text
    assert "Expected test accuracy" in text and "Expected time" in text


def test_every_flagfile_is_covered():
    names = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "flags", "*.cfg"))}
    assert names == set(ROWS) | set(CLOTHING1M_ROWS) | set(METHOD_FLAGFILES) | {
        "paper_cifar10.cfg", "paper_cifar100.cfg", "paper_clothing1m.cfg", "default.cfg",
        "method_tanaka_clothing1m.cfg", "method_sop.cfg", "method_sop_cifar100.cfg",
        "method_dividemix.cfg", "method_dividemix_cifar100.cfg", "method_dividemix_asym.cfg",
        "idn_plus.cfg"} | set(ELR_FLAGFILES)  # idn_plus.cfg: tests/test_idn_options.py


def test_tanaka_clothing1m_flagfile_on_top_of_a_row():
    cfg = _config_from_flagfile("table3_clothing1m_row7.cfg", *DATA_DIR,
                                "--flagfile=flags/method_tanaka_clothing1m.cfg")
    expected = dict(method="tanaka", tanaka_alpha=1.2, tanaka_beta=0.8,
                    tanaka_prior="observed", tanaka_average_epochs=10)
    assert {k: getattr(cfg, k) for k in expected} == expected
    base = _config_from_flagfile("table3_clothing1m_row7.cfg", *DATA_DIR)
    assert cfg == dataclasses.replace(base, **expected, run_dir=cfg.run_dir,
                                      model_name=cfg.model_name)
    assert TANAKA.start(cfg) == 6 and TANAKA.phase1_config(cfg).lr == 2.5e-3


# The baselines' flagfiles, on top of a row's: (flags they set, the paper values they must give).
METHOD_FLAGFILES = {
    "method_coteaching.cfg": dict(method="coteaching", coteaching_tau="auto",
                                  coteaching_t_k=10),
    "method_tanaka.cfg": dict(method="tanaka", tanaka_alpha=1.2, tanaka_beta=0.8,
                              tanaka_prior="uniform", tanaka_average_epochs=10),
    "method_forward.cfg": dict(method="forward", transition_matrix="true"),
    "method_pencil.cfg": dict(method="pencil", pencil_alpha=0.4, pencil_beta=0.1),
}


@pytest.mark.parametrize("name", sorted(METHOD_FLAGFILES))
@pytest.mark.parametrize("row", ["table1_cifar10_idn.cfg", "table2_cifar10_ccn_0.4.cfg",
                                 "table1_cifar100_idn.cfg"])
def test_method_flagfiles_on_top_of_a_row(name, row):
    cfg = _config_from_flagfile(row, f"--flagfile=flags/{name}")
    expected = METHOD_FLAGFILES[name]
    assert {k: getattr(cfg, k) for k in expected} == expected
    base = _config_from_flagfile(row)
    # The row's data, noise and recipe are kept; only the method's fields change.
    assert cfg == dataclasses.replace(base, **expected, run_dir=cfg.run_dir,
                                      model_name=cfg.model_name)
    assert cfg.run_dir == os.path.join("runs", base.setting_name() + f"-{cfg.method}-0")
    # The schedules are the authors', scaled to the recipe's 160 epochs (70/200 for
    # Tanaka; 70/320 and 200/320 for PENCIL), each the first epoch of its phase; PENCIL's λ
    # keeps the authors' 600·130/128 = λ·(phase-2 epochs)/batch size.
    assert (TANAKA.start(cfg), PENCIL.phases(cfg)) == (57, (36, 101))
    assert PENCIL.step(cfg) == pytest.approx(600 * 130 / 128 * 256 / (101 - 36))
    with open(os.path.join(ROOT, "flags", name)) as f:
        header = "".join(line for line in f if line.startswith("#"))
    assert f"--flagfile=flags/{name}" in header  # the usage line
    assert "Expected test accuracy" in header and "Expected time" in header


def test_baseline_schedules_scale_the_authors_to_the_run():
    c = config_lib.Config()  # digits: 40 epochs, batch 64
    assert (TANAKA.start(c), PENCIL.phases(c)) == (15, (10, 26))
    assert PENCIL.step(c) == pytest.approx(600 / 128 * 130 * 64 / 16)
    # They follow --epochs (a comparison with a short schedule must not be refused) ...
    short = config_lib.resolve({"epochs": 5, "method": "pencil"})
    assert PENCIL.phases(short) == (2, 4)
    assert TANAKA.start(config_lib.resolve({"epochs": 5, "method": "tanaka"})) == 3
    # ... unless given: then used as given, and checked against --epochs.
    given = config_lib.resolve({"method": "pencil", "pencil_joint_start": 3,
                                "pencil_finetune_start": 7, "pencil_lambda": 50.0})
    assert PENCIL.phases(given) == (3, 7) and PENCIL.step(given) == 50.0
    assert TANAKA.start(config_lib.resolve({"method": "tanaka", "tanaka_start_epoch": 4})) == 4
    with pytest.raises(config_lib.ConfigError, match="--tanaka_start_epoch"):
        config_lib.resolve({"method": "tanaka", "epochs": 5, "tanaka_start_epoch": 6})
    # A joint start given alone moves phase 3 no earlier than it.
    assert PENCIL.phases(config_lib.resolve({"method": "pencil", "pencil_joint_start": 30})) \
        == (30, 30)


def test_a_given_forget_rate_is_one_setting_however_it_is_written():
    a = config_lib.resolve({"method": "coteaching", "coteaching_tau": "0.40"})
    b = config_lib.resolve({"method": "coteaching", "coteaching_tau": "0.4"})
    assert a.coteaching_tau == b.coteaching_tau == "0.4"
    assert a.semantic_dict() == b.semantic_dict()


# ELR's flagfiles set the authors' whole protocol (backbone, optimiser, schedule) besides β, λ.
ELR_PROTOCOL = dict(method="elr", arch="resnet34", normalize="standardize", batch_size=128,
                    lr=0.02, momentum=0.9, weight_decay=1e-3, lr_decay_factor=0.01)
ELR_FLAGFILES = {
    "method_elr.cfg": ("table2_cifar10_ccn_0.4.cfg", dict(
        ELR_PROTOCOL, elr_beta=0.7, elr_lambda=3.0, epochs=120, lr_decay_epochs=(40, 80))),
    "method_elr_cifar100.cfg": ("table1_cifar100_idn.cfg", dict(
        ELR_PROTOCOL, elr_beta=0.9, elr_lambda=7.0, epochs=150, lr_decay_epochs=(80, 120))),
}


@pytest.mark.parametrize("name", sorted(ELR_FLAGFILES))
def test_elr_flagfiles_on_top_of_a_row(name):
    row, expected = ELR_FLAGFILES[name]
    cfg = _config_from_flagfile(row, f"--flagfile=flags/{name}")
    base = _config_from_flagfile(row)
    # The row's data, noise, augmentation and split are kept; the rest is the authors'.
    assert cfg == dataclasses.replace(base, **expected, run_dir=cfg.run_dir,
                                      model_name=cfg.model_name)
    assert (cfg.dataset, cfg.augment, cfg.val_fraction) == (base.dataset, "pad_crop_flip", 0.0)
    with open(os.path.join(ROOT, "flags", name)) as f:
        header = "".join(line for line in f if line.startswith("#"))
    assert f"--flagfile=flags/{name}" in header and "Expected test accuracy" in header
    assert "Expected time" in header and "ResNet-34" in header


# The authors' CIFAR-100 values of the modern baselines, written out from their code
# (DivideMix Train_cifar.py warm_up = 30, paper λ_u 150; ELR config_cifar100.json β 0.9,
# λ 7; SOP README lr_u 1, lr_v 10), scaled to the CIFAR recipe (160 epochs, batch 256) as
# the CIFAR-10 defaults are: warm-up 30·160/300 = 16, SOP 1·(256/128)·(300/160) = 3.75 and
# 10·3.75 = 37.5; CIFAR-10's: warm-up 10·160/300 → 5, SOP 10·3.75 = 37.5.
CIFAR100_AUTHORS = {"dividemix": dict(warmup=16, dividemix_lambda_u=150.0),
                    "elr": dict(elr_beta=0.9, elr_lambda=7.0),
                    "sop": dict(rates=(3.75, 37.5))}
CIFAR10_DEFAULTS = {"dividemix": dict(warmup=5, dividemix_lambda_u=25.0),
                    "elr": dict(elr_beta=0.7, elr_lambda=3.0),
                    "sop": dict(rates=(37.5, 37.5))}


def _method_values(cfg, method):
    def value(name):
        if name == "warmup":
            return methods.get("dividemix").warmup_epochs(cfg)
        if name == "rates":
            return tuple(methods.get("sop").rates(cfg))
        return getattr(cfg, name)
    return {name: value(name) for name in CIFAR100_AUTHORS[method]}


@pytest.mark.parametrize("method", sorted(CIFAR100_AUTHORS))
@pytest.mark.parametrize("dataset", ["cifar100", "cifar100_n"])
def test_cifar100_alone_gives_the_authors_cifar100_values(method, dataset):
    cfg = config_lib.resolve({"dataset": dataset, "method": method})
    assert _method_values(cfg, method) == CIFAR100_AUTHORS[method]


@pytest.mark.parametrize("method", sorted(CIFAR10_DEFAULTS))
def test_cifar10_keeps_the_authors_cifar10_defaults(method):
    cfg = config_lib.resolve({"dataset": "cifar10", "method": method})
    assert _method_values(cfg, method) == CIFAR10_DEFAULTS[method]


def test_explicit_flags_win_over_the_cifar100_recipe():
    given = {"dividemix_warmup_epochs": 7, "dividemix_lambda_u": 25.0, "elr_beta": 0.5,
             "elr_lambda": 2.0, "sop_lr_u": 3.0, "sop_lr_v": 4.0}
    cfg = config_lib.resolve({"dataset": "cifar100", "method": "dividemix", **given})
    assert {k: getattr(cfg, k) for k in given} == given
    assert methods.get("dividemix").warmup_epochs(cfg) == 7
    # Flagfiles are explicit flags too: the CIFAR-10 DivideMix file on a CIFAR-100 row
    # gives CIFAR-10's values (warm-up 10, λ_u 25).
    cfg = _config_from_flagfile("table1_cifar100_idn.cfg", "--flagfile=flags/method_dividemix.cfg")
    assert (cfg.dividemix_warmup_epochs, cfg.dividemix_lambda_u) == (10, 25.0)


@pytest.mark.parametrize("epochs,start", [(20, 5), (15, 4), (160, 35), (40, 9), (4, 2)])
def test_folder_recipe_from_scratch_takes_the_papers_from_scratch_eta_schedule(epochs, start):
    # η from epoch 35 of 160 (scaled, rounded up, at least 2), then every 5th epoch.
    for scratch in ({"arch": "small_cnn", "backbone_weights": "none"},
                    {"arch": "resnet50", "backbone_weights": "none"}):
        c = config_lib.resolve({"dataset": "folder", "data_dir": "x", "epochs": epochs, **scratch})
        assert (c.eta_start_epoch, c.eta_every, c.eta_lr) == (start, 5, 0.05)
    pretrained = config_lib.resolve({"dataset": "folder", "data_dir": "x", "epochs": epochs})
    assert (pretrained.eta_start_epoch, pretrained.eta_every) == (2, 1)
    given = config_lib.resolve({"dataset": "folder", "data_dir": "x", "epochs": epochs,
                                "arch": "small_cnn", "backbone_weights": "none",
                                "eta_start_epoch": 3, "eta_every": 2})
    assert (given.eta_start_epoch, given.eta_every) == (3, 2)
    digits = config_lib.resolve({"arch": "small_cnn", "epochs": epochs})
    assert (digits.eta_start_epoch, digits.eta_every) == (3, 2)  # the digits recipe's own
