"""What a run needs from its data, for pixels in memory and for image files on disk.

The stages, the monitoring, the report and the audit see a dataset only through one of
two classes with the same attributes and methods:

- `ArrayData` wraps a `sources.Dataset` (digits, npz, CIFAR): images are numpy arrays.
- `FileData` wraps a `dataset.FileDataset` (Clothing1M, a class folder): paths and
  labels; `streaming` reads, decodes, resizes and crops the images on the fly, every epoch.

Both expose:

    name, num_classes, class_names
    train             the noisy training split: .labels, .clean_labels, len() (noise step)
    test_size         number of test examples
    own_test_labels   whether the test labels are the user's own (a class folder's), not
                      a benchmark's checked ones
    input_shape       (H, W, C) the classifier takes
    table_size        rows of the η / ψ tables: the noisy examples (0..N-1), then, with
                      Clothing1M's --clean_train=mix, the clean training examples (N..N+C-1)
    pixel_statistics(), table_psi(psi), initial_eta(eta_init)
    fingerprint()     what identifies the training rows (None: fixed by the source)
    relative_paths()  str [N]: the training rows' files relative to the data folder, or
                      None for arrays (the audit's path column)
    train_dataset(labels, batch_size, seed, epochs, initial_epoch), steps_per_epoch(...)
    test_dataset(batch_size)
    validation_dataset(batch_size)  the validation records (observed labels of the held-out
                      rows; Clothing1M: its clean validation list), or None without any
    validation_size   number of validation examples (0: none)
    rows              int64 [N]: each training row's number in the source's training split
    validation_rows   int64 [V]: the held-out validation rows' numbers there (empty: none
                      held out, e.g. Clothing1M's own validation list)
    audited_splits()  the `AuditedSplit`s the label audit checks besides the training rows
    hold_out(rows, labels)  (the view without the held-out `rows`, their labels removed
                      from `labels`): the noisy validation split (`holdout`)
    unaugmented(batch_size)  the un-augmented noisy training examples, in index order:
                      a uint8 array [N, H, W, C] or a tf.data dataset of records
                      (`model.example_log_probs` predicts them: ψ, monitoring, the audit)
    images(rows)      uint8 un-augmented images of some noisy training rows (plots)

`as_examples` gives a bare uint8 image array the same `unaugmented` and `images`
(`ImageArray`); `ImageFiles` gives them to a split of image files.
The views hold data only: predicting with a classifier is the model layer's job.
Only `FileData` has the clean training set (`clean_train_dataset`) for fine-tuning.
TensorFlow is imported inside the methods, so building a view costs nothing.
"""

import dataclasses
import hashlib
import os

import numpy as np

from idn_tf.data.dataset import FileSplit, Split

# ImageNet's per-channel statistics on the [0, 1] scale: the standardisation of file
# datasets when the backbone is not pretrained (the pretrained one brings its own);
# reading ~1M images for their own statistics would cost a pass over the disk.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pixel_statistics(images):
    """Per-channel mean and std of uint8 images [N, H, W, C] scaled to [0, 1]."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return pixels.mean(axis=0), np.maximum(pixels.std(axis=0), 1e-3)


class ImageArray:
    """Training images held in memory [N, H, W, C], with the views' unaugmented and images."""

    def __init__(self, images):
        self.array = images

    def unaugmented(self, batch_size):
        return self.array

    def images(self, rows):
        return self.array[np.asarray(rows, np.int64)]


class ImageFiles:
    """A `dataset.FileSplit`'s images decoded un-augmented (`streaming.eval_dataset` with
    the view's `transform`), with the views' unaugmented and images."""

    def __init__(self, split, transform):
        self.split, self.transform = split, transform

    def unaugmented(self, batch_size, rows=None):
        """The records (image, label) of the split, or of its `rows`, in order."""
        from idn_tf.data import streaming
        paths, labels = self.split.paths, self.split.labels
        if rows is not None:
            paths, labels = paths[rows], labels[rows]
        return streaming.eval_dataset(paths, labels, batch_size, **self.transform)

    def images(self, rows):
        rows = np.asarray(rows, np.int64)
        if len(rows) == 0:
            size = self.transform["image_size"]
            return np.zeros((0, size, size, 3), np.uint8)
        return np.concatenate([batch["image"].numpy()
                               for batch in self.unaugmented(256, rows)])


@dataclasses.dataclass(frozen=True, eq=False)
class AuditedSplit:
    """Rows besides the training rows whose observed labels the label audit checks.

    split: "validation" (the rows --val_fraction held out of the training split) or
    "test" (a class folder's test images: their labels are the user's own); labels,
    clean_labels (-1 unknown), rows (the `index` column: the row in the source's
    training split, or in its test split) [M]; paths: str [M] relative to the data
    folder (file sources) or None; examples: their images (`unaugmented`, `images`).
    """
    split: str
    labels: np.ndarray
    clean_labels: np.ndarray
    rows: np.ndarray
    paths: object
    examples: object

    def __len__(self):
        return len(self.labels)


def validation_split(validation, rows, paths, examples):
    """The held-out validation rows as an `AuditedSplit` (none: an empty tuple)."""
    if not len(rows):
        return ()
    return (AuditedSplit("validation", validation.labels, validation.clean_labels, rows,
                         paths, examples),)


def as_examples(examples):
    """`examples` (a uint8 image array or a view) as an object with unaugmented and images."""
    return ImageArray(examples) if isinstance(examples, np.ndarray) else examples


class ArrayData:
    """A `sources.Dataset` held in memory; augmentation as `pipeline.augmenter`.

    `validation`: the held-out `dataset.Split` (its `labels` the observed ones),
    `validation_rows` its rows' numbers in the source and `rows` the training rows', as
    `hold_out` makes them.
    """

    def __init__(self, dataset, augment="none", padding=4, validation=None, rows=None,
                 validation_rows=None):
        self.dataset = dataset
        self.validation = validation
        self.validation_size = 0 if validation is None else len(validation)
        self.rows = np.arange(len(dataset.train), dtype=np.int64) if rows is None else rows
        self.validation_rows = (np.zeros(0, np.int64) if validation_rows is None
                                else validation_rows)
        self.name = dataset.name
        self.num_classes = dataset.num_classes
        self.class_names = dataset.class_names
        self.train = dataset.train
        self.test_size = len(dataset.test)
        self.own_test_labels = False
        self.input_shape = tuple(dataset.train.images.shape[1:])
        self.table_size = len(dataset.train)
        self.augment, self.padding = augment, padding
        self._examples = ImageArray(dataset.train.images)

    def fingerprint(self):
        """None: the rows of an in-memory source are fixed by the source itself."""
        return None

    def relative_paths(self):
        """None: the examples are arrays, not files."""
        return None

    def audited_splits(self):
        """The held-out validation rows (the test labels are the source's checked ones)."""
        if not self.validation_size:
            return ()
        return validation_split(self.validation, self.validation_rows, None,
                                ImageArray(self.validation.images))

    def pixel_statistics(self):
        return pixel_statistics(self.train.images)

    def table_psi(self, psi):
        return np.asarray(psi, np.float32)

    def initial_eta(self, eta_init):
        return np.full(self.table_size, eta_init, np.float32)

    def train_dataset(self, labels, batch_size, seed, epochs, initial_epoch=0):
        from idn_tf.data import pipeline
        return pipeline.train_dataset(self.train.images, labels, self.train.clean_labels,
                                      batch_size, seed=seed, augment=self.augment,
                                      padding=self.padding, epochs=epochs,
                                      initial_epoch=initial_epoch)

    def steps_per_epoch(self, labels, batch_size):
        return -(-len(labels) // batch_size)

    def test_dataset(self, batch_size):
        from idn_tf.data import pipeline
        return pipeline.eval_dataset(self.dataset.test.images, self.dataset.test.labels,
                                     batch_size)

    def validation_dataset(self, batch_size):
        if not self.validation_size:
            return None
        from idn_tf.data import pipeline
        return pipeline.eval_dataset(self.validation.images, self.validation.labels, batch_size)

    def hold_out(self, rows, labels):
        """(the view of the training rows not in `rows`, those rows' `labels`); the
        held-out rows, with their observed `labels`, become the validation split."""
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return self, np.asarray(labels)
        train, labels = self.train, np.asarray(labels)
        held = Split(train.images[rows], labels[rows], train.clean_labels[rows])
        return self.without(rows, labels, validation=held, validation_rows=self.rows[rows])

    def without(self, rows, labels, validation=None, validation_rows=None):
        """(the view of the training rows not in `rows`, their `labels`), validating on
        `validation` (a `dataset.Split` of the source's rows `validation_rows`; default:
        this view's validation split). A fold of `stages.fold_probs` trains on it."""
        from idn_tf.data import holdout
        train, labels = self.train, np.asarray(labels)
        keep = holdout.training_rows(len(train), rows)
        kept = Split(train.images[keep], train.labels[keep], train.clean_labels[keep])
        if validation is None:
            validation, validation_rows = self.validation, self.validation_rows
        view = ArrayData(dataclasses.replace(self.dataset, train=kept), self.augment,
                         self.padding, rows=self.rows[keep], validation=validation,
                         validation_rows=validation_rows)
        return view, labels[keep]

    def unaugmented(self, batch_size):
        return self._examples.unaugmented(batch_size)

    def images(self, rows):
        return self._examples.images(rows)


class FileData:
    """A file source (`dataset.FileDataset`: Clothing1M, a class folder), streamed from
    disk (`streaming`).

    Parameters
    ----------
    data : dataset.FileDataset
    image_size, resize, resize_mode : the streaming transform (module docstring there).
    oversample : None, "auto" or per-class multipliers (`streaming.oversample_indices`).
    mix_clean : bool
        Half of every training batch from the clean training set, whose examples get
        table rows N..N+C-1 with η fixed at 0 (the paper's row #8).
    root : str, optional
        The folder the paths are in (`fingerprint` uses paths relative to it).
    rows : int64 [N], optional
        The training rows' numbers in the source (`hold_out` makes them; default 0..N-1).
    validation_rows : int64 [V], optional
        The numbers there of the rows `hold_out` held out for validation (default none).

    The validation split is `data.clean_val`: Clothing1M's clean list, or the rows of a
    class folder's training split that `hold_out` held out, with their observed labels.
    """

    def __init__(self, data, image_size=224, resize=256, resize_mode="square",
                 oversample=None, mix_clean=False, root=None, rows=None, validation_rows=None):
        self.data = data
        self.root = root
        self.name = data.name
        self.num_classes = data.num_classes
        self.class_names = data.class_names
        self.train = data.noisy
        self.test_size = len(data.clean_test)
        self.own_test_labels = data.own_test_labels
        self.input_shape = (image_size, image_size, 3)
        self.mix_clean = mix_clean
        self.table_size = len(data.noisy) + (len(data.clean_train) if mix_clean else 0)
        self.validation_size = len(data.clean_val)
        self.rows = np.arange(len(data.noisy), dtype=np.int64) if rows is None else rows
        self.validation_rows = (np.zeros(0, np.int64) if validation_rows is None
                                else validation_rows)
        self._transform = dict(image_size=image_size, resize=resize, resize_mode=resize_mode)
        self._examples = ImageFiles(self.train, self._transform)
        self.oversample = oversample
        # What `hold_out` builds its view with (besides the data and rows).
        self._options = dict(self._transform, oversample=oversample, mix_clean=mix_clean,
                             root=root)

    def noise_dataset(self, pixels=False):
        """What the noise generators read (`noise.make_noisy_labels`): name, num_classes
        and the training split, its un-augmented images read into memory if `pixels`
        (the noises that cluster or fit images), else none."""
        import types
        n = len(self.train)
        images = self.images(np.arange(n)) if pixels else np.zeros((n, 1, 1, 1), np.uint8)
        return types.SimpleNamespace(name=self.name, num_classes=self.num_classes,
                                     train=Split(images, self.train.labels,
                                                 self.train.clean_labels))

    def fingerprint(self):
        """sha256 of the noisy examples' keys (paths relative to the folder) and labels in
        index order: which image row i is. A restart must not reuse η and ψ rows for other
        images; the same folder moved elsewhere keeps its fingerprint."""
        digest = hashlib.sha256()
        for key, label in zip(self.relative_paths(), self.train.labels):
            digest.update(f"{key}\t{label}\n".encode())
        return digest.hexdigest()

    def relative_paths(self, split=None):
        """str [N]: the training rows' image files (or `split`'s, a `dataset.FileSplit`),
        relative to the data folder."""
        paths = (self.train if split is None else split).paths
        if not self.root:
            return paths.copy()
        return np.array([os.path.relpath(p, self.root).replace(os.sep, "/") for p in paths],
                        dtype=str)

    def listing(self):
        """(relative paths, labels) of every image of the source's training and test
        splits: what a restart compares to say which files moved (`inputs.folder_changed`)."""
        test = self.data.clean_test
        return (np.concatenate([self.relative_paths(), self.relative_paths(test)]),
                np.concatenate([np.asarray(self.train.labels), np.asarray(test.labels)]))

    def audited_splits(self):
        """The held-out validation rows, then the test images where their labels are the
        user's own (`dataset.FileDataset.own_test_labels`: a class folder), their clean
        labels unknown: the run added no noise to them and nobody checked them."""
        val, test = self.data.clean_val, self.data.clean_test
        splits = validation_split(val, self.validation_rows, self.relative_paths(val),
                                  ImageFiles(val, self._transform))
        if self.own_test_labels:
            splits += (AuditedSplit("test", test.labels, np.full(len(test), -1, np.int64),
                                    test.index, self.relative_paths(test),
                                    ImageFiles(test, self._transform)),)
        return splits

    def pixel_statistics(self):
        return np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)

    def table_psi(self, psi):
        """ψ of the noisy rows, then 1 for the clean rows (unused there: η = 0)."""
        extra = self.table_size - len(psi)
        return np.concatenate([np.asarray(psi, np.float32), np.ones(extra, np.float32)])

    def initial_eta(self, eta_init):
        """eta_init for the noisy rows, 0 for the clean rows (fixed there)."""
        eta = np.zeros(self.table_size, np.float32)
        eta[:len(self.train)] = eta_init
        return eta

    def train_dataset(self, labels, batch_size, seed, epochs, initial_epoch=0):
        from idn_tf.data import streaming
        noisy = self.train
        common = dict(batch_size=batch_size, seed=seed, epochs=epochs,
                      initial_epoch=initial_epoch, oversample=self.oversample, **self._transform)
        if not self.mix_clean:
            return streaming.train_dataset(noisy.paths, labels, noisy.clean_labels, noisy.index,
                                           **common)
        clean = self.data.clean_train
        return streaming.mixed_train_dataset(
            noisy.paths, labels, noisy.clean_labels, noisy.index, clean.paths, clean.labels,
            clean_index=len(noisy) + clean.index, **common)

    def steps_per_epoch(self, labels, batch_size):
        from idn_tf.data import streaming
        return streaming.steps_per_epoch(labels, batch_size, self.oversample,
                                         mixed=self.mix_clean)

    def clean_train_dataset(self, batch_size, seed, epochs, initial_epoch=0):
        """Augmented batches of the clean training set alone (row #10's fine-tuning)."""
        from idn_tf.data import streaming
        clean = self.data.clean_train
        return streaming.train_dataset(clean.paths, clean.labels, clean.labels, clean.index,
                                       batch_size=batch_size, seed=seed, epochs=epochs,
                                       initial_epoch=initial_epoch, **self._transform)

    def clean_steps_per_epoch(self, batch_size):
        return -(-len(self.data.clean_train) // batch_size)

    def _eval(self, split, batch_size):
        return ImageFiles(split, self._transform).unaugmented(batch_size)

    def test_dataset(self, batch_size):
        return self._eval(self.data.clean_test, batch_size)

    def validation_dataset(self, batch_size):
        """Clothing1M's clean validation list, or the rows `hold_out` held out."""
        return self._eval(self.data.clean_val, batch_size) if self.validation_size else None

    def hold_out(self, rows, labels):
        """(the view of the training rows not in `rows`, those rows' `labels`): the held-out
        rows, with their observed `labels`, become the validation split. Clothing1M holds
        nothing out (it has its own list)."""
        rows, labels = np.asarray(rows, np.int64), np.asarray(labels)
        if not len(rows):
            return self, labels
        if len(self.data.clean_val):
            raise ValueError("this file source validates on its own list; nothing is held out")
        train = self.train
        held = FileSplit(train.paths[rows], labels[rows], train.clean_labels[rows],
                         np.arange(len(rows), dtype=np.int64))
        return self.without(rows, labels, validation=held, validation_rows=self.rows[rows])

    def without(self, rows, labels, validation=None, validation_rows=None):
        """(the view of the training rows not in `rows`, their `labels`), validating on
        `validation` (a `dataset.FileSplit` of the source's rows `validation_rows`;
        default: this view's validation split)."""
        from idn_tf.data import holdout
        train, labels = self.train, np.asarray(labels)
        keep = holdout.training_rows(len(train), rows)
        kept = FileSplit(train.paths[keep], train.labels[keep], train.clean_labels[keep],
                         np.arange(len(keep), dtype=np.int64))
        if validation is None:
            validation, validation_rows = self.data.clean_val, self.validation_rows
        view = FileData(dataclasses.replace(self.data, noisy=kept, clean_val=validation),
                        rows=self.rows[keep], validation_rows=validation_rows, **self._options)
        return view, labels[keep]

    def unaugmented(self, batch_size):
        return self._examples.unaugmented(batch_size)

    def images(self, rows):
        return self._examples.images(rows)


def from_config(config, loaded):
    """The view of `loaded` (a sources.Dataset or a dataset.FileDataset) for `config`."""
    if hasattr(loaded, "noisy"):
        return FileData(loaded, image_size=config.image_size, resize=config.resize,
                        resize_mode=config.resize_mode, oversample=config.oversample_mode(),
                        mix_clean=config.clean_train == "mix",
                        root=os.path.abspath(config.data_dir))
    return ArrayData(loaded, augment=config.augment, padding=config.crop_padding)
