"""Every train_step keeps its variable reads and writes in program order after Grappler.

tf.function orders a read of a variable and a later write of it by a control edge;
Grappler's dependency optimizer may drop such an edge when the written value does not
depend on the read. DivideMix's co-guess reads the other network (eval mode, targets
only), and before `model.apply_update` ordered the update after the loss, that
network's update could run first: one uninterrupted run in ten differed from the next
(tests/test_dividemix.py's resume test failed that often). The check here does not
depend on timing: it optimizes each step's graph as the runtime does (Grappler's
default passes) and looks for a read and a write of one variable with no path between
them.
"""

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.python.framework import meta_graph
from tensorflow.python.grappler import tf_optimizer

from idn_tf import model
from idn_tf.data import codivide

import mirrored
import test_stateful_resume as stateful

K, N = 3, 10
WRITES = ("Assign", "ResourceApply", "ResourceScatter", "ResourceSparseApply")


def unordered_pairs(m, batch):
    """(variable, read op, write op) of m.train_step's Grappler-optimized graph with
    neither op reachable from the other."""
    m.optimizer.build(m.trainable_variables)
    concrete = tf.function(m.train_step).get_concrete_function(batch)
    graph = concrete.graph
    variables = m.variables + m.optimizer.variables + [v for t in m.metrics for v in t.variables]
    names = {}
    for outer, inner in graph.captures:
        for v in variables:
            if outer is v.value.handle:
                names[inner.op.name] = v.path
    meta = meta_graph.create_meta_graph_def(graph_def=graph.as_graph_def(), graph=graph)
    fetch = meta.collection_def["train_op"].node_list.value
    fetch.extend([t.op.name for t in concrete.outputs] + [op.name for op in graph.control_outputs])
    optimized = tf_optimizer.OptimizeGraph(config_pb2.ConfigProto(), meta)

    after = collections.defaultdict(set)
    users = collections.defaultdict(list)
    for node in optimized.node:
        for source in node.input:
            source = source.lstrip("^").split(":")[0]
            after[source].add(node.name)
            if source in names:
                users[names[source]].append(node)

    def reachable(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in after[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    pairs = []
    for variable, nodes in users.items():
        writes = [n.name for n in nodes if n.op.startswith(WRITES)]
        for read in (n.name for n in nodes if not n.op.startswith(WRITES)):
            from_read = reachable(read)
            pairs += [(variable, read, w) for w in writes
                      if w not in from_read and read not in reachable(w)]
    return pairs


def plain_batch():
    rng = np.random.default_rng(0)
    return {"image": tf.constant(rng.integers(0, 256, (4, 2, 2, 1)).astype(np.uint8)),
            "label": tf.constant(rng.integers(0, K, 4).astype(np.int64)),
            "index": tf.constant(np.array([0, 3, 5, 9], np.int64))}


def dividemix_model(warming_up):
    import test_dividemix
    m = test_dividemix.model(steps=3, warmup=1, rampup=1)
    m.warming_up = warming_up
    return m


def dividemix_batch():
    rng = np.random.default_rng(10)
    images = rng.integers(0, 256, (N, 2, 2, 1)).astype(np.uint8)
    feed = codivide.SplitFeed(N, 4, 1, seed=0, warmup_epochs=0)
    feed.publish(0, np.arange(N) % 2 == 0, np.arange(N) % 3 == 0)
    return next(iter(codivide.dataset(images, rng.integers(0, K, N), feed)))


def labels():
    return np.random.default_rng(0).integers(0, K, N)


MODELS = {
    "ce": lambda: model.CrossEntropyModel(mirrored.dense_classifier(stateful.weights(1)),
                                          weight_decay=1e-3),
    "idn": lambda: model.IDNModel(mirrored.dense_classifier(stateful.weights(1)),
                                  psi=np.linspace(0.1, 0.9, N).astype(np.float32),
                                  eta_init=0.2, eta_lr=0.3),
    "idn_q_ensemble": lambda: model.IDNModel(mirrored.dense_classifier(stateful.weights(1)),
                                             psi=np.linspace(0.1, 0.9, N).astype(np.float32),
                                             eta_init=0.2, eta_lr=0.3, q_ensemble=0.7),
    "tanaka": lambda: stateful.tanaka(labels())[0],
    "pencil": lambda: stateful.pencil(labels())[0],
    "elr": lambda: stateful.elr_model(labels())[0],
    "coteaching": lambda: stateful.co_teaching(labels())[0],
    "sop": lambda: stateful.sop_noise(labels())[0],
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_single_batch_steps_keep_reads_before_writes(name):
    m = MODELS[name]()
    m.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    assert unordered_pairs(m, plain_batch()) == []


@pytest.mark.parametrize("warming_up", [True, False], ids=["warm-up", "mixmatch"])
def test_dividemix_steps_keep_reads_before_writes(warming_up):
    m = dividemix_model(warming_up)
    m.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    assert unordered_pairs(m, dividemix_batch()) == []


def test_without_the_loss_edge_the_co_guess_read_is_unordered(monkeypatch):
    """The check can fail: the update as it was before `apply_update` (no edge from the
    loss) leaves the co-guess's reads of the other network unordered with its update."""
    def unordered_update(optimizer, grads, variables, weight_decay, after):
        del after
        optimizer.apply(model.coupled_l2(grads, variables, weight_decay), variables)

    monkeypatch.setattr(model, "apply_update", unordered_update)
    m = dividemix_model(warming_up=False)
    m.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    pairs = unordered_pairs(m, dividemix_batch())
    # Both networks' kernel and bias: each is read by the other's co-guess.
    assert {variable for variable, _, _ in pairs} == {
        v.path for net in m.networks for v in net.trainable_variables}
