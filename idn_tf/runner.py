"""One run, end to end, as the paper's Algorithm 1 reads (docs/architecture.md):

    preflight → data → noise → stage 1 (if the method needs it) → the method's stages
    → the audit's held-out classifiers → fine-tuning → report → export

`run(config)` is all of it; each step is one function below, and each stage goes
through the run folder's one reuse-or-train mechanism (`runfolder.RunFolder.stage`),
so a restarted run redoes only what it had not finished. What is particular to a
method (its stages, models, inputs and results) is asked of its `methods.Method`.
TensorFlow is imported only once the flags and the data have been checked.
"""

import dataclasses
import os
import sys
import time

from idn_tf import (artifacts, audit, distribution, inputs, methods, plots, precision, report,
                    runfolder)
from idn_tf.runfolder import FINETUNE_FIELDS, FINETUNE_RESULTS, RunFolder, banner


def run(config, data=None, labels=None):
    """Runs --method as `config` says; returns the results dict (also in results.json).

    `data`: the data view, if the caller loaded it already (`idn_tf.compare` runs many
    configurations on the same data); else loaded here. `labels`: the arrays of
    noisy_labels.npz, if the caller made them for `data` (`idn_tf.compare`: the seed's,
    for each of its cells); used where the run folder has none, else made here.
    Under --strategy=multi_worker every worker runs this; only the chief writes.
    """
    start = time.time()
    method = methods.get(config.method)
    folder = RunFolder(config, final_stage=method.final_stage())
    preflight(config)
    data = data if data is not None else inputs.load_data(config)
    given = method.preflight(config, data)
    fresh = inputs.fresh_noisy_labels(folder, config, data, labels)
    prepare_folder(folder, config, method)
    warn(folder, config)
    config = xla_config(config)  # flags.txt keeps the --jit_compile asked for
    data, labels, rate = inputs.observed_labels(folder, config, data, fresh)  # the training rows' view
    inputs.write_excluded(folder, config, data)  # after the check that its rows are these images
    # The classifiers train and export under --precision; the noise above is float32.
    with precision.policy(config.precision):
        stage1 = stage_one(folder, config, data, labels, method) if method.needs_stage1(config) else None
        state = methods.Run(config, data, labels, rate, folder, stage1, given)
        trained = method.train(state)
        held_out = method.audit_probs(state)  # trains on every worker, as the stages do
        tuned = finetune(folder, config, data, trained.classifier)
        if not folder.is_chief:
            print(f"\nworker done ({time.time() - start:.0f} s); the chief writes the results")
            return None
        res = report_run(state, trained, method, held_out)
        res.update(test_images=data.test_size, own_test_labels=data.own_test_labels)
        if tuned is not None:
            res.update(finetuned_test_accuracy=tuned.result.test_accuracy,
                       finetune_history=tuned.result.history,
                       **report.selection("finetuned", tuned.result))
        names = config.served_class_names(data.class_names)
        final = (("finetune", tuned, None) if tuned is not None
                 else (method.final_stage(), trained, method.new_classifier))
        exported, classifier = guarded_export_choice(state, method, final, res)
        previous = previous_export(folder, config, method, names, exported)
        folder.write(artifacts.write_json, "results.json", res)  # kept if the export fails
        res["saved_model"] = previous or (config.export_dir and export(
            config, classifier(), names, exported))
        folder.write(artifacts.write_json, "results.json", res)
    print(f"\n{report.table(res, method)}")
    print(f"\nresults in {config.run_dir}/ ({time.time() - start:.0f} s)")
    return res


def preflight(config):
    """What must hold before the data are read: the strategy (a multi-worker cluster is
    formed before TensorFlow runs anything else) and the backbone's weights."""
    distribution.check(config.strategy)
    if config.strategy == "multi_worker":
        distribution.get_strategy(config.strategy)
    inputs.fetch_backbone_weights(config)


def warn(folder, config):
    """The chief's `warning:` lines on stderr, once the run is accepted: what its flags ask
    for that it will not do (`Config.warnings`)."""
    sys.stdout.flush()  # after the lines before it, in a log of both
    for line in config.warnings() if folder.is_chief else ():
        print(f"warning: {line}", file=sys.stderr, flush=True)


def xla_config(config):
    """`config` with --jit_compile as the run can use it (`distribution.xla_plan`): off,
    with one line saying so, with several replicas or --deterministic."""
    if not config.jit_compile:
        return config
    replicas = distribution.get_strategy(config.strategy).num_replicas_in_sync
    use, note = distribution.xla_plan(config.jit_compile, config.strategy, replicas,
                                      config.deterministic)
    if note:
        print(note, flush=True)
    return config if use else dataclasses.replace(config, jit_compile=False)


def prepare_folder(folder, config, method):
    """The chief checks the export folder and takes the run folder (config.json, flags.txt;
    another run's folder is refused); all workers then agree on what it holds."""
    if folder.is_chief:
        check_export_dir(config)
        flags_dict = {k: v for k, v in config.to_dict().items() if k not in ("dry_run", "overwrite")}
        artifacts.prepare_run_dir(config.run_dir, config.semantic_dict(), flags_dict,
                                  config.overwrite, later_stage_fields=FINETUNE_FIELDS,
                                  later_stage_paths=FINETUNE_RESULTS,
                                  method_files=methods.run_files())
    if config.strategy == "multi_worker":
        distribution.check_same_state(config.strategy, run_dir_state(folder, method))
    if config.deterministic:
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()


def run_stages(method):
    """The stages a run of `method` trains, in order (stage 1 named even where it is skipped)."""
    return tuple(dict.fromkeys(("stage1", *method.stage_names)))


def run_dir_state(folder, method):
    """What a restart would reuse: [noisy labels, stages done; backup epochs]."""
    from idn_tf import callbacks
    stages = run_stages(method)
    done = [os.path.isfile(folder.path(n)) for n in (
        "noisy_labels.npz", *(f"{s}.json" for s in stages))]
    # The fine-tuning's files are left out: the chief deletes them when only --finetune_*
    # changed, and another worker may look before it has (the workers have no barrier here).
    epochs = [callbacks.Backup.latest(folder.backup_dir(s))[0] for s in stages]
    return [int(d) for d in done] + epochs


def stage_one(folder, config, data, labels, method):
    """Stage 1, cross-entropy on the observed labels: the CE baseline and ψ.

    Returns its `Trained` (value: ψ [N]; classifier: None when reused for a method that
    needs only ψ). psi.npy, stage1.json (and stage1.weights.h5) are reused on restart.
    """
    from idn_tf import stages
    keep_classifier = method.uses_stage1_classifier(config)

    def train():
        classifier, result = stages.train_cross_entropy(config, data, labels)
        psi = stages.estimate_psi(classifier, data, labels, config.batch_size)
        print(f"CE test accuracy {100 * result.test_accuracy:.2f}%; mean ψ {psi.mean():.3f}")
        return runfolder.Trained(classifier, result, value=psi)

    def save(trained):
        folder.write(artifacts.write_weights, "stage1.weights.h5", trained.classifier)
        folder.write(artifacts.write_npy, "psi.npy", trained.value)

    def load(result, extra):
        psi = folder.array("psi.npy", len(labels))
        classifier = folder.weights_into(
            "stage1.weights.h5", stages.classifier_in_scope(config, data)) if keep_classifier else None
        return runfolder.Trained(classifier, result, value=psi)

    files = ("psi.npy", "stage1.weights.h5") if keep_classifier else ("psi.npy",)
    return folder.stage("stage1", "stage 1", files, train, save, load, optional_monitor=True,
                        training="stage 1: cross-entropy on the observed labels (CE baseline, ψ)")


def finetune(folder, config, data, classifier):
    """Row #10: the final classifier fine-tuned on the clean training set, or None.

    finetune.json and finetuned.weights.h5 are reused on restart.
    """
    if not config.finetune_clean_epochs:
        return None
    from idn_tf import stages

    def train():
        tuned, result = stages.finetune(config, data, classifier)
        print(f"fine-tuned test accuracy {100 * result.test_accuracy:.2f}%")
        return runfolder.Trained(tuned, result)

    def save(trained):
        folder.write(artifacts.write_weights, "finetuned.weights.h5", trained.classifier)

    def load(result, extra):
        tuned = stages.classifier_in_scope(config, data)
        return runfolder.Trained(folder.weights_into("finetuned.weights.h5", tuned), result)

    return folder.stage(
        "finetune", "fine-tuning", ("finetuned.weights.h5",), train, save, load,
        optional_monitor=True,  # it keeps no monitoring
        training=f"fine-tuning on the clean training set: {config.finetune_clean_epochs} "
                 f"epoch(s) at lr {config.finetune_lr:g}")


def report_run(state, trained, method, held_out=None):
    """Plots, the label audit of a method that learns η, and the results dict (written by
    `run` after the export). The audit (`audit.report`) covers the N noisy training
    examples (the first N rows of η and ψ) and the view's validation and test rows
    (`data.audited_splits()`), and decides from `held_out` ([N + M, K],
    `Method.audit_probs`) if given."""
    folder, config, data, labels, stage1 = (state.folder, state.config, state.data,
                                            state.labels, state.stage1)
    banner("report: label audit and plots" if method.audits_labels else "report: plots")
    curves = {} if stage1 is None else {"stage 1: cross-entropy": plots.stage_curves(
        stage1.result.monitor, stage1.result.history)}
    if method.final_stage() != "stage1":
        curves[method.plot_label or method.name] = plots.stage_curves(trained.result.monitor,
                                                                      trained.result.history)
    plot_dir = folder.path("plots")
    plots.accuracy_curves(os.path.join(plot_dir, "accuracy.png"), curves)
    ce = None if stage1 is None else stage1.result
    if not method.audits_labels:
        print(f"{plot_dir}/: accuracy.png")
        res = report.baseline_results(config, state.rate, ce, trained.result, trained.extra)
        res.update(method.results(state, trained))
        return res
    from idn_tf import stages
    n, clean = len(labels), data.train.clean_labels
    eta, psi = trained.model.eta.numpy()[:n], trained.model.psi.numpy()[:n]
    q = stages.posterior_table(trained.classifier, data, labels, eta, psi, config.batch_size,
                               config.eta_numerics)
    detection = audit.report(folder.dir, q, eta, psi, labels, data, held_out,
                             trained.classifier, config.batch_size)
    top, known = report.ranking(q, eta, labels)[:16], (clean >= 0).all()
    plots.eta_histogram(os.path.join(plot_dir, "eta_histogram.png"), eta,
                        is_wrong=labels != clean if known else None)
    plots.highest_eta_grid(os.path.join(plot_dir, "highest_eta.png"), data.images(top),
                           data.rows[top], labels[top], q[top].argmax(1),
                           data.class_names, clean=clean[top] if known else None,
                           eta=eta[top])
    print(f"{plot_dir}/: accuracy.png, eta_histogram.png, highest_eta.png")
    res = report.results(config, state.rate, ce, trained.result, q, eta, labels, clean)
    res.update(detection)
    return res


def selected_classifier(folder, config, data, stage, trained, new_classifier=None):
    """The classifier a run exports: the epoch chosen on the validation split (its
    weights in memory, or <stage>.selected.npz of a reused stage), else the last.
    `new_classifier(config, data)` makes the classifier the weights go into (default
    `stages.new_classifier`; a method's own, `Method.new_classifier`)."""
    if trained.result.selection is None:
        return trained.classifier
    weights = trained.result.selected_weights
    if weights is None:
        weights = folder.selected_weights(stage)
    from idn_tf import stages
    # Outside the strategy's scope: only the chief exports, and under multi_worker a
    # variable made in the scope would wait for the workers that have finished.
    classifier = (new_classifier or stages.new_classifier)(config, data)
    folder.reuse(folder.selected_name(stage), lambda: classifier.set_weights(weights))
    return classifier


def guarded_export_choice(state, method, final, res):
    """(which classifier the run exports, "method" or "stage1"; a function making it),
    after the export guard (`guard`): where stage 1 chose an epoch on the validation split
    and the method's final classifier is another, the two are compared there, the verdict
    goes into `res` ("export_guard", "exported_classifier") and one line is printed. With
    --export_classifier=auto a classifier the guard finds worse gives way to stage 1's."""
    folder, config, data, stage1 = state.folder, state.config, state.data, state.stage1

    def final_classifier():
        return selected_classifier(folder, config, data, *final)

    applies = (method.final_stage() != "stage1" and stage1 is not None
               and stage1.result.selection is not None and final[1].result.selection is not None)
    if not applies:
        res["exported_classifier"] = "method"
        return "method", final_classifier
    from idn_tf import guard, stages
    fallback = selected_classifier(folder, config, data, "stage1", stage1)
    chosen = final_classifier()
    right = stages.validation_right((fallback, chosen), data, config.batch_size)
    verdict = guard.compare(*right, data.num_classes)
    use_stage1 = verdict["worse"] and config.export_classifier == "auto"
    exported = "stage1" if use_stage1 else "method"
    res["export_guard"] = verdict
    res["exported_classifier"] = exported
    res["export_guard_message"] = guard.message(verdict, exported)
    print(f"\n{res['export_guard_message']}", flush=True)
    return exported, (lambda: fallback) if use_stage1 else (lambda: chosen)


def check_export_dir(config):
    """RunDirError now, not after hours of training, if the export cannot be written.

    Leaves nothing behind: the folders made for the test are removed again (the export
    makes them when it runs), so a run stopped by a later check leaves no trace here.
    """
    if not config.export_dir:
        return
    model_dir = os.path.join(config.export_dir, config.model_name)
    made, folder = [], os.path.abspath(model_dir)
    while not os.path.lexists(folder):
        made.append(folder)  # deepest first
        folder = os.path.dirname(folder)
    try:
        os.makedirs(model_dir, exist_ok=True)
        artifacts.write_text(os.path.join(model_dir, ".write-test"), "")
        os.remove(os.path.join(model_dir, ".write-test"))
    except OSError as e:
        raise artifacts.RunDirError(f"--export_dir={config.export_dir}: cannot write {model_dir} "
                                    f"({e.strerror or e})") from None
    finally:
        for folder in made:
            try:
                os.rmdir(folder)
            except OSError:
                break


def previous_export(folder, config, method, class_names, exported="method"):
    """The SavedModel a finished run in this folder exported already, if it still exists,
    serves `class_names` and holds the classifier this run exports (`exported`, "method"
    or "stage1").

    Restarting a finished run reuses everything; only a run whose final stage was trained
    again, whose served names changed (--export_class_names) or that exports the other
    classifier publishes a new version.
    """
    path = folder.path("results.json")
    if not config.export_dir or config.overwrite or not os.path.isfile(path):
        return ""
    try:
        before = artifacts.read_json(path)
        saved = before.get("saved_model") or ""
        same_classifier = before.get("exported_classifier", "method") == exported
    except (OSError, ValueError, AttributeError):
        return ""
    done = max((os.path.getmtime(folder.path(name))
                for name in (f"{method.final_stage()}.json", "finetune.json")
                if os.path.isfile(folder.path(name))), default=float("inf"))
    fresh = os.path.isfile(os.path.join(saved, "saved_model.pb")) and os.path.getmtime(path) >= done
    same_model = os.path.dirname(os.path.abspath(saved)) == os.path.abspath(
        os.path.join(config.export_dir, config.model_name))
    from idn_tf import export as export_lib
    if fresh and same_model and same_classifier and export_lib.has_class_names(saved, class_names):
        print(f"\n== export: reusing {saved}")
        return saved
    return ""


def export(config, classifier, class_names, exported="method"):
    """SavedModel of `classifier` for TF Serving, answering with `class_names` too;
    returns its path (or ""). `exported` ("method" or "stage1") names it in the output line.

    For file datasets the serving graph resizes and centre-crops photos of any size
    as the evaluation does (`export.EvalResize`).
    """
    if not config.export_dir:
        return ""
    from idn_tf import export as export_lib
    from idn_tf.data import sources
    banner("export: SavedModel")
    resize = None
    if config.dataset in sources.FILE_SOURCES:
        resize = export_lib.EvalResize(resize=config.resize, image_size=config.image_size,
                                       mode=config.resize_mode)
    try:
        path = export_lib.export_saved_model(classifier, config.export_dir, config.model_name,
                                             eval_resize=resize, class_names=class_names)
    except OSError as e:
        raise artifacts.RunDirError(f"--export_dir={config.export_dir}: cannot write there "
                                    f"({e.strerror or e})") from None
    which = "stage 1's (plain cross-entropy)" if exported == "stage1" else "the method's"
    print(f"exported {which} classifier to {path}\n  (signature serving_default: uint8 "
          "images -> probabilities, classes, class_names)")
    return path
