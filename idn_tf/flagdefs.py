"""Every command-line flag of `python -m idn_tf.train`, in one place.

The defaults shown are `Config`'s (the embedded digits recipe). A run takes
the recipe of its --dataset (config.RECIPES: the paper's for cifar10/cifar100)
and then every flag the user set explicitly, on the command line or in a
flagfile. Choices are enums; numeric ranges are checked by `config.validate`,
which library users who build a `Config` directly get too. `--help` lists the
flags in the sections opened by `_section` below (`help_sections`).
"""

import types

from absl import flags

from idn_tf import config, methods
from idn_tf.methods.idn import (ETA_NUMERICS, ETA_RULES, PSI_MODES, PSI_SOURCES,
                                STAGE2_LR_DECAYS)
from idn_tf.methods.ldmi import BATCHES as DMI_BATCHES
from idn_tf.methods.pencil import LR_SCHEDULES as PENCIL_LR_SCHEDULES
from idn_tf.methods.sop import LR_SCHEDULES as SOP_LR_SCHEDULES

# The defaults of every configuration field: `Config`'s own and the methods'.
C = types.SimpleNamespace(**config.field_defaults())

# --help's sections: (title, how many of this module's flags are defined before it).
_SECTIONS = []


def _section(title):
    """Opens a section of --help: the flags defined after this call, up to the next one."""
    _SECTIONS.append((title, len(flags.FLAGS.get_flags_for_module(__name__))))


def help_sections():
    """[(title, [flag name, in definition order])]: the flags of idn_tf.train by section."""
    names = [flag.name for flag in flags.FLAGS.get_flags_for_module(__name__)]
    ends = [start for _, start in _SECTIONS[1:]] + [len(names)]
    return [(title, names[start:end]) for (title, start), end in zip(_SECTIONS, ends)]


_section("Data and noise")
flags.DEFINE_enum("dataset", C.dataset, config.DATASETS,
                  "Data source, and the recipe of defaults that comes with it: digits (bundled "
                  "with scikit-learn, offline), npz (--npz_path), cifar10 / cifar100 (the "
                  "paper's recipes), cifar10_n / cifar100_n (human noisy labels); the CIFAR "
                  "ones come through tensorflow-datasets (--data_dir); clothing1m (the paper's "
                  "real-noise recipe: a Clothing1M folder given as --data_dir, streamed from "
                  "disk); folder (your own images: --data_dir/<class name>/<image>, streamed "
                  "from disk; docs/own_data.md).")
flags.DEFINE_string("data_dir", C.data_dir,
                    "tensorflow-datasets data folder (default: tfds's, ~/tensorflow_datasets); with "
                    "--dataset=clothing1m the Clothing1M folder, with --dataset=folder the "
                    "folder of class subfolders (required for both).")
flags.DEFINE_boolean("download", C.download,
                     "Download and prepare a tensorflow-datasets dataset missing from --data_dir "
                     "(offline, the run stops within seconds: the download host is probed "
                     "first); "
                     "--nodownload stops at once.")
flags.DEFINE_string("noisy_label_key", C.noisy_label_key,
                    "CIFAR-N human label set: cifar10_n aggregate|random1|random2|random3|worst "
                    "(recipe: worst), cifar100_n noisy (recipe).")
flags.DEFINE_string("class_names", C.class_names,
                    "With --dataset=npz or folder: a text file of class names, one per line "
                    "(line k + 1 names class k). It sets the number of classes K (a label "
                    "outside [0, K) stops the run) and the names shown in the audit, plots "
                    "and TensorBoard. A folder's names default to its sorted subfolders.")
flags.DEFINE_float("test_fraction", C.test_fraction,
                   "With --dataset=folder and no <data_dir>/test: share of each class held "
                   "out as the test split, chosen by a hash of the file path (the same for "
                   "every --seed and method), in (0, 1).")
flags.DEFINE_string("npz_path", C.npz_path,
                    "With --dataset=npz: a .npz with x_train, y_train, x_test, y_test "
                    "(uint8 images [N,H,W,C] or [N,H,W]; int labels) and optional clean_train.")
flags.DEFINE_enum("noise", C.noise, config.NOISE_TYPES,
                  "Synthetic noise on the training labels (docs/method.md §5): none (labels as "
                  "given), kmeans (clusters relabelled by majority: CIFAR-10 IDN), mlp (weak model's "
                  "predictions: CIFAR-100 IDN), ccn (class pairs), symmetric.")
flags.DEFINE_float("noise_rate", C.noise_rate, "Flip probability for ccn and symmetric noise, in [0, 1].")
flags.DEFINE_integer("kmeans_clusters", C.kmeans_clusters, "Clusters for kmeans noise.")
flags.DEFINE_enum("noise_features", C.noise_features, config.NOISE_FEATURES,
                  "Features for kmeans/mlp noise: pca of the pixels, raw pixels, or ImageNet "
                  "ResNet-50 pool-5 (resnet50; the cifar10 recipe).")
flags.DEFINE_integer("noise_feature_dims", C.noise_feature_dims, "PCA components for --noise_features=pca.")
flags.DEFINE_integer("noise_feature_size", C.noise_feature_size,
                     "Images are resized to this size for --noise_features=resnet50.")
flags.DEFINE_string("noise_feature_weights", C.noise_feature_weights,
                    "ResNet-50 weights for --noise_features=resnet50: imagenet (downloaded by "
                    "Keras), a local no-top weights file, or none (random; tests only).")
flags.DEFINE_integer("mlp_hidden_units", C.mlp_hidden_units, "Hidden units of the mlp-noise MLP.")
flags.DEFINE_integer("mlp_epochs", C.mlp_epochs, "Epochs of the mlp-noise MLP (at most, with a target).")
flags.DEFINE_float("mlp_target_accuracy", C.mlp_target_accuracy,
                   "Stop the mlp-noise MLP once this fraction of its labels is correct (0: run "
                   "all --mlp_epochs; the cifar100 recipe: 0.6929, the paper's rate).")
flags.DEFINE_integer("seed", C.seed, "Seed for noise, initialisation and shuffling.")
flags.DEFINE_float("val_fraction", C.val_fraction,
                   "Share of the noisy training split held out as the validation split, "
                   "stratified by observed label and drawn once per (data, noise, seed): each "
                   "epoch's accuracy against its observed labels chooses the epoch whose "
                   "classifier is exported (the test set decides nothing). In [0, 0.5]; 0: "
                   "none (the CIFAR recipes: the paper trains on the whole split). "
                   "Clothing1M: ignored, it validates on its clean validation list (a class "
                   "folder holds out its own share, as digits).")

_section("Clothing1M and class folders: reading, checking, streaming the images")
flags.DEFINE_float("subset_fraction", C.subset_fraction,
                   "Clothing1M: train on this fraction of the noisy training list, a fixed "
                   "subset (the same for every --seed); the clean splits stay whole.")
flags.DEFINE_boolean("skip_bad_images", C.skip_bad_images,
                     "Clothing1M and folder: leave out missing or damaged images (listed in the run "
                     "folder's excluded_images.csv) instead of stopping before training.")
flags.DEFINE_enum("image_check", C.image_check, config.IMAGE_CHECKS,
                  "Clothing1M and folder: how each image is checked before training: header "
                  "(format, end marker; a few KB each), decode (every byte), exists.")
flags.DEFINE_string("oversample", C.oversample,
                    "Clothing1M: copies of minority noisy classes: none, auto (every class up "
                    "to the largest), or 14 comma-separated multipliers >= 1; copies share "
                    "their example's η.")
flags.DEFINE_enum("clean_train", C.clean_train, config.CLEAN_TRAIN,
                  "Clothing1M: mix adds the 50k clean training examples, half of every batch, "
                  "with η fixed at 0 (the paper's row #8).")
flags.DEFINE_integer("image_size", C.image_size,
                     "Clothing1M and folder: the classifier's input size (random crop in training, centre "
                     "crop in evaluation and serving).")
flags.DEFINE_integer("resize", C.resize, "Clothing1M and folder: images are resized to this before the crop.")
flags.DEFINE_enum("resize_mode", C.resize_mode, config.RESIZE_MODES,
                  "Clothing1M and folder: square (resize x resize, ignoring the aspect ratio) or "
                  "shorter_side (the shorter side to --resize).")

_section("Classifier and optimiser (the same in every stage)")
flags.DEFINE_enum("arch", C.arch, config.ARCHITECTURES,
                  "Classifier backbone (cifar recipes: resnet32).")
flags.DEFINE_string("backbone_weights", C.backbone_weights,
                    "Initial weights of --arch=resnet50: imagenet, none, or a weights file path.")
flags.DEFINE_enum("normalize", C.normalize, config.NORMALIZATIONS,
                  "Input normalisation inside the model: per-channel (x/255 - mean)/std, or "
                  "mean subtraction only (cifar recipes, as the paper).")
flags.DEFINE_enum("augment", C.augment, config.AUGMENTATIONS,
                  "Training augmentation: none, or pad_crop_flip (pad by --crop_padding, random "
                  "crop back, random horizontal flip; cifar recipes).")
flags.DEFINE_integer("crop_padding", C.crop_padding, "Zero padding (pixels) before the random crop.")
flags.DEFINE_integer("epochs", C.epochs, "Epochs of each stage.")
flags.DEFINE_integer("batch_size", C.batch_size, "Global batch size.")
flags.DEFINE_float("lr", C.lr, "Classifier learning rate α₂ (SGD).")
flags.DEFINE_list("lr_decay_epochs", [str(e) for e in C.lr_decay_epochs],
                  "Epochs (1-based) after which the learning rate is multiplied by "
                  "--lr_decay_factor; one at or after --epochs never takes effect (a warning "
                  "says so).")
flags.DEFINE_float("lr_decay_factor", C.lr_decay_factor, "Learning-rate decay factor.")
flags.DEFINE_float("momentum", C.momentum, "SGD momentum.")
flags.DEFINE_float("weight_decay", C.weight_decay, "Coupled L2 weight decay (PyTorch-style SGD) on all weights.")
flags.DEFINE_boolean("jit_compile", C.jit_compile, "Compile train steps with XLA.")
flags.DEFINE_enum("precision", C.precision, config.PRECISIONS,
                  "Dtype policy of the classifiers: float32, mixed_float16 (GPUs with float16 "
                  "tensor cores; loss scaling) or mixed_bfloat16 (TPUs, recent GPUs and CPUs). "
                  "Logits, q, η and the tables stay float32 (docs/precision.md).")
flags.DEFINE_enum("strategy", C.strategy, config.STRATEGIES,
                  "tf.distribute strategy: auto (mirrored when several GPUs are visible, else "
                  "one device), one_device, mirrored (all local GPUs, or CPUs if none), "
                  "multi_worker (MultiWorkerMirroredStrategy from the TF_CONFIG variable).")
flags.DEFINE_boolean("deterministic", C.deterministic,
                     "TensorFlow op determinism: a rerun (or a resumed run) gives the same "
                     "numbers, at some cost in speed.")

_section("The method: η, ψ and the label audit (docs/method.md; names as in the paper)")
flags.DEFINE_float("eta_init", C.eta_init, "Initial confusing probability η for every example.")
flags.DEFINE_float("eta_lr", C.eta_lr, "η step size α₁ (Eq. 11).")
flags.DEFINE_integer("eta_start_epoch", C.eta_start_epoch, "First epoch (1-based) that updates η.")
flags.DEFINE_integer("eta_every", C.eta_every, "η is updated every this many epochs from --eta_start_epoch.")
flags.DEFINE_enum("eta_rule", C.eta_rule, ETA_RULES,
                  "η step: paper (Eq. 11 as published) or exact (true gradient of Eq. 9).")
flags.DEFINE_enum("eta_numerics", C.eta_numerics, ETA_NUMERICS,
                  "authors: the likelihood of Eq. 3 floored at 1e-5 and the η step divided by "
                  "max(η, 1e-5), as the authors' released code (the default); literal: the "
                  "equations as printed, under which η = 0 is absorbing.")
flags.DEFINE_float("eta_eps", C.eta_eps,
                   "ε in the denominator η + ε of the paper's rule (Eq. 11) under "
                   "--eta_numerics=literal.")
flags.DEFINE_float("eta_min", C.eta_min,
                   "Lower end of the η projection (ours); 0 is the paper's [0, 1].")
# Our options for stage 2 (docs/method.md §7.6); each default is the paper's setting.
flags.DEFINE_enum("psi_source", C.psi_source, PSI_SOURCES,
                  "Where stage 2's ψ comes from: final (the paper: stage 1's last epoch), "
                  "selected (stage 1's epoch chosen on the validation split) or crossval "
                  "(out-of-sample, from --psi_folds CE classifiers each trained without one fold).")
flags.DEFINE_integer("psi_folds", C.psi_folds, "Folds of --psi_source=crossval (>= 2).")
flags.DEFINE_enum("psi_mode", C.psi_mode, PSI_MODES,
                  "How stage 1's classifier gives ψ: eval (inference mode on the un-augmented "
                  "images, the default) or train (training mode, batch statistics, on one epoch "
                  "of augmented batches, as the authors' released code).")
flags.DEFINE_integer("audit_folds", C.audit_folds,
                     "The label audit ranks each training label by 1 − its probability under "
                     "CE classifiers that did not see it (this many folds, >= 2) and flags by "
                     "confident learning. 0: no extra training; the audit then decides from the "
                     "method's own posterior q, which has fitted the labels and can rank wrong "
                     "labels last.")
flags.DEFINE_float("q_ensemble", C.q_ensemble,
                   "β of the temporal ensemble Eq. 8 takes its predictions from: 0 (the paper) "
                   "uses the batch's p; β in (0, 1) an exponential moving average of each "
                   "example's predictions, as ELR's targets.")
flags.DEFINE_enum("stage2_lr_decay", C.stage2_lr_decay, STAGE2_LR_DECAYS,
                  "Stage 2's learning-rate steps: recipe (the paper: --lr_decay_epochs) or late "
                  "(constant --lr until the last of them, then one step).")
flags.DEFINE_enum("preset", C.preset, config.PRESET_NAMES,
                  "A named set of the method's settings, applied over the dataset's recipe and "
                  "under the flags given: none, or idn_plus (ours, chosen on noisy validation "
                  "on digits; docs/method.md §7.6, flags/idn_plus.cfg).")

_section("Which method trains the classifier, and the baselines' settings (docs/baselines.md)")
# A string checked by `config.validate` against the registry (a method registered later,
# e.g. by a test, is a valid --method too).
flags.DEFINE_string("method", C.method,
                    f"One of {', '.join(methods.names())}. idn: the method (stage 1 CE, then "
                    "stage 2); ce: stage 1 alone (standard cross-entropy); forward: forward "
                    "loss correction (Patrini et al. 2017); bootstrap_soft / bootstrap_hard: "
                    "bootstrapping (Reed et al. 2015); ldmi: L_DMI (Xu et al. 2019) from the "
                    "stage-1 CE model; coteaching: Co-teaching (Han et al. 2018); tanaka: joint "
                    "optimisation (Tanaka et al. 2018); pencil: PENCIL (Yi & Wu 2019); elr: "
                    "early-learning regularisation (Liu et al. 2020); sop: sparse "
                    "over-parameterisation (Liu et al. 2022); dividemix: DivideMix (Li et al. "
                    "2020).")
flags.DEFINE_string("transition_matrix", C.transition_matrix,
                    "--method=forward: a known transition matrix T (row i = P(observed label | "
                    "class i)), a K x K .npy file or text file (numpy.loadtxt); true: the true "
                    "T, the generating matrix of ccn/symmetric noise, else counted from the "
                    "clean and observed training labels (needs the clean labels); default: T "
                    "estimated from the stage-1 CE model.")
flags.DEFINE_float("forward_percentile", C.forward_percentile,
                   "--method=forward: row i of the estimated T comes from the training example "
                   "at this percentile of the CE model's p(i | x) (Patrini et al.: 97; 100: "
                   "the arg max).")
flags.DEFINE_float("bootstrap_soft_beta", C.bootstrap_soft_beta,
                   "--method=bootstrap_soft: weight β of the observed label in the target "
                   "β·ỹ + (1−β)·p (Reed et al.: 0.95).")
flags.DEFINE_float("bootstrap_hard_beta", C.bootstrap_hard_beta,
                   "--method=bootstrap_hard: weight β of the observed label in the target "
                   "β·ỹ + (1−β)·onehot(argmax p) (Reed et al.: 0.8).")
flags.DEFINE_float("dmi_lr", C.dmi_lr,
                   "--method=ldmi: constant learning rate of the L_DMI stage, which starts from "
                   "the stage-1 CE model and trains --epochs epochs (Xu et al.'s code: 1e-6).")
flags.DEFINE_float("dmi_eps", C.dmi_eps,
                   "--method=ldmi: ε added to |det(PᵀỸ)| of the unnormalised batch matrix "
                   "(Xu et al.'s code: 0.001); keeps the loss finite for a batch missing a class.")
flags.DEFINE_enum("dmi_batches", C.dmi_batches, DMI_BATCHES,
                  "--method=ldmi: cover: every training batch holds an example of every observed "
                  "class (a batch without one has zero L_DMI gradient; needs --batch_size >= K "
                  "and an in-memory dataset); random: shuffled batches, as stage 1's.")

flags.DEFINE_string("coteaching_tau", C.coteaching_tau,
                    "--method=coteaching: the final forget rate τ, a number in [0, 1); auto: "
                    "actual where every clean training label is known (synthetic noise, "
                    "CIFAR-N), else estimate (the Clothing1M recipe: 0.3846); estimate: "
                    "Σ π_i (1 − T_ii) from the T estimated on the stage-1 CE model "
                    "(--forward_percentile) and the observed class frequencies π; actual: the "
                    "measured fraction of wrong training labels (an oracle; needs the clean "
                    "training labels).")
flags.DEFINE_integer("coteaching_t_k", C.coteaching_t_k,
                     "--method=coteaching: the forget rate grows linearly from 0 (first epoch) "
                     "to τ (epoch T_k + 1) (Han et al.: 10).")
flags.DEFINE_float("tanaka_alpha", C.tanaka_alpha,
                   "--method=tanaka: weight α of KL(class prior ‖ batch mean prediction) "
                   "(Tanaka et al., CIFAR-10: 1.2).")
flags.DEFINE_float("tanaka_beta", C.tanaka_beta,
                   "--method=tanaka: weight β of the prediction entropy (Tanaka et al.: 0.8).")
flags.DEFINE_integer("tanaka_start_epoch", C.tanaka_start_epoch,
                     "--method=tanaka: first epoch (1-based) at whose end the soft labels become "
                     "the mean predictions of the last --tanaka_average_epochs epochs; 0: Tanaka "
                     "et al.'s (71 of 200) scaled to --epochs.")
flags.DEFINE_integer("tanaka_average_epochs", C.tanaka_average_epochs,
                     "--method=tanaka: a soft label is the mean of the example's predictions "
                     "over this many last epochs (Tanaka et al.'s code: 10; 1: the last epoch's "
                     "alone); not scaled with --epochs.")
flags.DEFINE_string("tanaka_prior", C.tanaka_prior,
                    "--method=tanaka: the class prior p of KL(p ‖ batch mean prediction): "
                    "uniform (Tanaka et al. on CIFAR), observed (the observed labels' class "
                    "frequencies over an epoch's rows, --oversample copies counted), or a file "
                    "of K probabilities (.npy or text).")
flags.DEFINE_float("tanaka_lr", C.tanaka_lr,
                   "--method=tanaka: constant learning rate of the first phase; 0: half of "
                   "--lr (Tanaka et al.'s code trains its first step at half its second's "
                   "rate, 0.1 and 0.2); --tanaka_lr equal to --lr is the behaviour before.")
flags.DEFINE_float("pencil_alpha", C.pencil_alpha,
                   "--method=pencil: weight α of the compatibility term −log softmax(y^d)[observed] "
                   "(Yi & Wu's code: 0.4).")
flags.DEFINE_float("pencil_beta", C.pencil_beta,
                   "--method=pencil: weight β of the prediction entropy (Yi & Wu's code: 0.1).")
flags.DEFINE_float("pencil_lambda", C.pencil_lambda,
                   "--method=pencil: step size λ of the label logits (ỹ ← ỹ − λ ∂L/∂ỹ, L the "
                   "batch mean); 0: Yi & Wu's 600 at batch 128 over 130 phase-2 epochs, scaled "
                   "to keep λ·(phase-2 epochs)/--batch_size.")
flags.DEFINE_integer("pencil_joint_start", C.pencil_joint_start,
                     "--method=pencil: first epoch (1-based) of phase 2, labels and network "
                     "learned together; 0: Yi & Wu's (71 of 320) scaled to --epochs.")
flags.DEFINE_integer("pencil_finetune_start", C.pencil_finetune_start,
                     "--method=pencil: first epoch (1-based) of phase 3, the network fine-tuned "
                     "on the learned labels; --epochs + 1: none; 0: Yi & Wu's (201 of 320) "
                     "scaled to --epochs.")
flags.DEFINE_enum("pencil_lr_schedule", C.pencil_lr_schedule, PENCIL_LR_SCHEDULES,
                  "--method=pencil: authors: Yi & Wu's code, --lr through phases 1-2, phase 3 "
                  "restarted at --lr x 0.2/0.06 and divided by 10 after each third of it; "
                  "recipe: the recipe's step decay (--lr_decay_epochs) through every phase.")
flags.DEFINE_float("elr_beta", C.elr_beta,
                   "--method=elr: momentum β of the targets, t ← β t + (1 − β) p (Liu et al., "
                   "CIFAR-10: 0.7; CIFAR-100: 0.9, the cifar100 recipes' value).")
flags.DEFINE_float("elr_lambda", C.elr_lambda,
                   "--method=elr: weight λ of the regulariser log(1 − <p, t>) (Liu et al., "
                   "CIFAR-10: 3; CIFAR-100: 7, the cifar100 recipes' value).")
flags.DEFINE_float("sop_lr_u", C.sop_lr_u,
                   "--method=sop: SGD step size of the per-example u (Liu et al.'s lr_u); 0: "
                   "their CIFAR-10 10 at batch 128 over 300 epochs, scaled to keep "
                   "lr_u·--epochs/--batch_size (the cifar100 recipes: their CIFAR-100 1 scaled so, 3.75).")
flags.DEFINE_float("sop_lr_v", C.sop_lr_v,
                   "--method=sop: SGD step size of the per-example v (Liu et al.'s lr_v); 0: "
                   "their CIFAR-10 10 at batch 128 over 300 epochs, scaled as --sop_lr_u (the "
                   "cifar100 recipes: their CIFAR-100 10 scaled so, 37.5).")
flags.DEFINE_float("sop_init_std", C.sop_init_std,
                   "--method=sop: u and v start from N(0, std²) (Liu et al.'s code: 1e-8).")
flags.DEFINE_float("sop_balance", C.sop_balance,
                   "--method=sop: weight λ_b of SOP+'s class-balance term (Liu et al.'s SOP+: "
                   "0.1); 0: SOP.")
flags.DEFINE_enum("sop_lr_schedule", C.sop_lr_schedule, SOP_LR_SCHEDULES,
                  "--method=sop: authors: Liu et al.'s cosine annealing of --lr to --lr/100 "
                  "over --epochs; recipe: the recipe's step decay (--lr_decay_epochs).")

flags.DEFINE_float("dividemix_lambda_u", C.dividemix_lambda_u,
                   "--method=dividemix: weight λ_u of the unlabelled loss L_u (Li et al.: 0, 25, "
                   "50 or 150 by noise level; their code's default 25, CIFAR-10 50% symmetric; "
                   "the cifar100 recipes: 150).")
flags.DEFINE_float("dividemix_p_threshold", C.dividemix_p_threshold,
                   "--method=dividemix: an example is labelled (clean) when its GMM clean "
                   "probability w is above this (Li et al.: 0.5).")
flags.DEFINE_float("dividemix_temperature", C.dividemix_temperature,
                   "--method=dividemix: sharpening temperature T (Li et al.: 0.5).")
flags.DEFINE_float("dividemix_alpha", C.dividemix_alpha,
                   "--method=dividemix: mixup's λ ~ Beta(α, α) (Li et al.: 4).")
flags.DEFINE_integer("dividemix_warmup_epochs", C.dividemix_warmup_epochs,
                     "--method=dividemix: epochs of cross-entropy warm-up of both networks; 0: "
                     "Li et al.'s CIFAR-10 10 of 300 scaled to --epochs (the cifar100 recipes: "
                     "their CIFAR-100 30 of 300 scaled, 16).")
flags.DEFINE_integer("dividemix_rampup_epochs", C.dividemix_rampup_epochs,
                     "--method=dividemix: epochs over which λ_u ramps up linearly after the "
                     "warm-up; 0: Li et al.'s 16 of 300 scaled to --epochs.")
flags.DEFINE_boolean("dividemix_confidence_penalty", C.dividemix_confidence_penalty,
                     "--method=dividemix: add the negative entropy of the predictions to the "
                     "warm-up loss (Li et al. for asymmetric noise and Clothing1M; "
                     "flags/method_dividemix_asym.cfg).")

_section("Clothing1M row #10: fine-tuning on the clean training set")
flags.DEFINE_integer("finetune_clean_epochs", C.finetune_clean_epochs,
                     "Clothing1M: after stage 2, fine-tune the classifier with cross-entropy on "
                     "the 50k clean training examples for this many epochs (the paper's row "
                     "#10); 0: none.")
flags.DEFINE_float("finetune_lr", C.finetune_lr,
                   "Constant learning rate of the clean fine-tuning (the recipe's lr ÷ 10).")

_section("The run: its folder, export and output")
flags.DEFINE_string("run_dir", C.run_dir, "Output folder; default runs/<dataset>[-<noisy_label_key>]-<noise>[<noise_rate>][-<method>]-<seed>, "
                    "the rate for ccn/symmetric only, the method unless idn.")
flags.DEFINE_integer("monitor_every", C.monitor_every,
                     "Write the label monitoring to TensorBoard (a prediction pass over the "
                     "training images) every this many epochs, and after the last.")
flags.DEFINE_integer("test_every", C.test_every,
                     "Evaluate the clean test set (test_accuracy in the logs, TensorBoard's "
                     "test/ folder, the curves) every this many epochs, and after the last; "
                     "it decides nothing.")
flags.DEFINE_string("export_dir", C.export_dir,
                    "SavedModel export folder: the final classifier goes to "
                    "<export_dir>/<model_name>/<next free version>/ ('' : no export).")
flags.DEFINE_string("model_name", C.model_name,
                    "Model name under --export_dir (default: the run folder's name).")
flags.DEFINE_enum("export_classifier", C.export_classifier, config.EXPORT_CLASSIFIERS,
                    "auto: export the method's classifier unless it is worse than stage 1's "
                    "(plain cross-entropy) on the noisy validation split by more than chance "
                    "explains (McNemar, p < 0.05), then stage 1's; method: the method's "
                    "regardless.")
flags.DEFINE_list("export_class_names", list(C.export_class_names),
                  "The K class names the SavedModel answers with (its class_names output "
                  "and assets/class_names.txt), comma-separated in class order: one per "
                  "class, distinct, none empty. Default: the data's names (a class "
                  "folder's subfolders or --class_names file, CIFAR's and Clothing1M's, "
                  "digits' 0-9, an npz's class numbers).")
flags.DEFINE_boolean("overwrite", C.overwrite, "Delete the run folder's previous artifacts and recompute everything, even if its saved flags differ.")
flags.DEFINE_boolean("dry_run", C.dry_run, "Print the settings this run reads (the resolved configuration without other "
                     "methods', noises' and datasets' fields) as JSON and exit.")
flags.DEFINE_integer("verbose", C.verbose,
                     "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch (the "
                     "loss, accuracy, validation and test accuracy; every log is in "
                     "results.json and TensorBoard).")

FLAGS = flags.FLAGS


def config_from_flags():
    """Reads the parsed flags once into a `Config` (raises ConfigError).

    Only flags given explicitly (command line or flagfile) override the recipe of
    --dataset; the others keep the recipe's value, not the flag's default.
    """
    return config.resolve(explicit_fields())


def explicit_fields():
    """The configuration fields given explicitly (field -> value), as `config.resolve` takes."""
    explicit = {name: FLAGS[name].value for name in config.field_names()
                if not FLAGS[name].using_default_value}
    if "lr_decay_epochs" in explicit:
        explicit["lr_decay_epochs"] = _ints("lr_decay_epochs", explicit["lr_decay_epochs"])
    if "export_class_names" in explicit:
        explicit["export_class_names"] = tuple(explicit["export_class_names"])
    return explicit


def _ints(name, strings):
    try:
        return tuple(int(s) for s in strings)
    except ValueError:
        raise config.ConfigError(f"--{name}: expected comma-separated integers, got {','.join(strings)!r}") from None
