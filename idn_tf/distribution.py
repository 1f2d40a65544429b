"""tf.distribute for a run: which strategy, who is the chief, and TF_CONFIG checked up front.

`--strategy=auto` is MirroredStrategy over the local GPUs when there are several, else the
default (one device). `multi_worker` is MultiWorkerMirroredStrategy configured by the
TF_CONFIG environment variable; it must be created before TensorFlow runs anything else.
Under every strategy `--batch_size` is the global batch. Only the chief (task "chief", or
worker 0 when there is no chief) writes the run's files (docs/run_folder.md, "Several GPUs or hosts").
"""

import functools
import json
import os

from idn_tf.errors import ConfigError

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


def parse_tf_config(text):
    """TF_CONFIG's JSON checked: {"cluster": {role: ["host:port", ...]}, "task": {"type", "index"}}.

    Returns the parsed dict; raises ConfigError (one line) when it is malformed.
    """
    def bad(why):
        return ConfigError(f"TF_CONFIG: {why} (expected JSON like "
                           '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                           '"task": {"type": "worker", "index": 0}})')

    if not text:
        raise bad("not set; --strategy=multi_worker needs it")
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as e:
        raise bad(f"not valid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(tf_config, dict):
        raise bad("not a JSON object")
    cluster, task = tf_config.get("cluster"), tf_config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise bad('no "cluster" object')
    for role, addresses in cluster.items():
        if (not isinstance(addresses, list) or not addresses
                or not all(isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses)):
            raise bad(f'cluster "{role}" must be a non-empty list of "host:port" strings')
    if "worker" not in cluster and "chief" not in cluster:
        raise bad('the cluster has neither "chief" nor "worker"')
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise bad(f'"task" must name a "type" of the cluster ({", ".join(cluster)})')
    index = task.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[task["type"]]):
        raise bad(f'"task" "index" must be an integer in [0, {len(cluster[task["type"]])})')
    return tf_config


def is_chief(strategy_name, environ=os.environ):
    """Whether this process writes the run's outputs: always, except a non-chief worker."""
    if strategy_name != "multi_worker":
        return True
    tf_config = parse_tf_config(environ.get("TF_CONFIG", ""))
    task = tf_config["task"]
    if "chief" in tf_config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def worker_label(environ=os.environ):
    """" (worker <type> <index>)" in a multi-worker cluster, else "" (for log lines)."""
    text = environ.get("TF_CONFIG", "")
    if not text:
        return ""
    try:
        task = parse_tf_config(text)["task"]
    except ConfigError:
        return ""
    return f" ({task['type']} {task['index']})"


def check(strategy_name, environ=os.environ):
    """ConfigError before anything runs if the strategy cannot be set up (e.g. bad TF_CONFIG)."""
    if strategy_name == "multi_worker":
        parse_tf_config(environ.get("TF_CONFIG", ""))


def xla_plan(jit_compile, strategy_name, replicas, deterministic=False):
    """(whether the train steps are XLA-compiled, the run's one start-up note or None).

    Every method's step compiles on one replica (docs/run_folder.md, "XLA"). Two cases
    cannot, and the run then trains without XLA and says so up front:

    - several replicas (`replicas`: the strategy's `num_replicas_in_sync`, all workers'):
      Keras's `jit_compile=True` compiles the whole distributed step, `strategy.run` over
      every replica, as one XLA cluster, and a cluster runs on one device, so the first
      step fails with "Trying to access resource … located in device …:1 from device
      …:0" (plain Keras as well). Compiling each replica's step alone is refused by
      tf.distribute too: the losses' cross-replica sums (`model.replica_sum`) and the
      optimizer's all-reduce cannot sit inside a nested tf.function.
    - `deterministic` (TensorFlow op determinism): Keras turns `jit_compile=True` off
      itself (`model_supports_jit`), with only a Python warning.
    """
    if not jit_compile:
        return False, None
    if replicas > 1:
        return False, (f"note: --jit_compile is off: {replicas} replicas (--strategy="
                       f"{strategy_name}) and Keras compiles all of them as one XLA cluster, "
                       "which runs on one device; training without XLA")
    if deterministic:
        return False, ("note: --jit_compile is off: Keras does not XLA-compile under "
                       "--deterministic (TensorFlow op determinism); training without XLA")
    return True, None


@functools.lru_cache(maxsize=None)
def get_strategy(strategy_name):
    """The tf.distribute strategy of `--strategy`, made once per process (TensorFlow
    imported here). MultiWorkerMirroredStrategy must be made before TensorFlow runs
    anything else: `train.run` asks for it first."""
    import tensorflow as tf
    if strategy_name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if strategy_name == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if strategy_name == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    return tf.distribute.get_strategy()  # the default: one device, no distribution


def check_same_state(strategy_name, state):
    """ConfigError on every worker unless all workers of the cluster report the same `state`.

    `state` is a list of numbers describing what a worker found in its run folder (which
    stages it will reuse, where their backups stand). Workers that disagree would run
    different stages and wait on each other's collectives forever; this is how a run
    folder that is not shared between the workers shows up on a restart. Each worker
    sums its numbers and their squares over the cluster: all equal exactly when
    n·Σx² = (Σx)², which every worker sees the same way.
    """
    if strategy_name != "multi_worker":
        return
    import tensorflow as tf
    strategy = get_strategy(strategy_name)
    local = tf.constant([[float(x), float(x) ** 2] for x in state], tf.float64)

    def total():
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local)

    sums = strategy.experimental_local_results(strategy.run(total))[0].numpy()
    n = strategy.num_replicas_in_sync
    if any(abs(n * squares - value ** 2) > 1e-9 * max(1.0, value ** 2)
           for value, squares in sums):
        raise ConfigError(
            "--strategy=multi_worker: the workers found different things in their run "
            f"folders (this worker: {list(state)}); on a restart every worker must see the "
            "chief's run folder at the same path (a shared file system)")
