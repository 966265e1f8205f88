"""What the evaluate and query handlers of :mod:`fedkd.client_app` do."""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message

from fedkd import keys
from fedkd.client.node import setup_node
from fedkd.client.node_state import fresh_student, load_student, save_student
from fedkd.client.private_data import private_data
from fedkd.client.replies import reply
from fedkd.client.streams import round_generator
from fedkd.client.train_job import adopt_weights
from fedkd.training import evaluate, fit_supervised, make_optimizer


def evaluate_student(msg: Message, context: Context) -> Message:
    """Test accuracy of the current student (a fresh student before any training).

    A global model in the message (fedavg, feddf) is adopted and saved first.
    """
    cfg, public, pid = setup_node(context)
    model, opt = load_student(context, cfg, public, pid)
    if keys.WEIGHTS in msg.content.array_records:  # a global model: the client adopts it
        opt = adopt_weights(cfg, model, msg.content.array_records[keys.WEIGHTS])
        save_student(context, model, opt)
    return reply(
        msg,
        {
            keys.NUM_EXAMPLES: len(public.y_test),
            keys.PARTITION_ID: pid,
            keys.TEST_ACCURACY: evaluate(model, public.x_test, public.y_test),
        },
    )


def query_info(msg: Message, context: Context) -> Message:
    """Partition id, private data size and class histogram (counts only, never data)."""
    cfg, public, pid = setup_node(context)
    _, y_local = private_data(cfg, context, pid)
    hist = np.bincount(y_local.numpy(), minlength=public.num_classes).astype(int).tolist()
    return reply(
        msg,
        {keys.PARTITION_ID: pid, keys.NUM_EXAMPLES: len(y_local), keys.CLASS_HISTOGRAM: hist},
    )


def query_local_only(msg: Message, context: Context) -> Message:
    """Baseline: a fresh student trained on private data only; its test accuracy."""
    cfg, public, pid = setup_node(context)
    epochs = int(msg.content.config_records[keys.CONFIG][keys.BASELINE_EPOCHS])  # type: ignore[arg-type]
    x_local, y_local = private_data(cfg, context, pid)
    model = fresh_student(cfg, public, pid)
    opt = make_optimizer(cfg.distill.optimizer, list(model.parameters()), cfg.distill.lr)
    fit_supervised(
        model,
        opt,
        x_local,
        y_local,
        epochs=epochs,
        batch_size=cfg.distill.batch_size,
        gen=round_generator(cfg.seed, pid, 0, "node.local_only"),
    )
    return reply(
        msg,
        {
            keys.PARTITION_ID: pid,
            keys.NUM_EXAMPLES: len(y_local),
            keys.LOCAL_ONLY_ACCURACY: evaluate(model, public.x_test, public.y_test),
        },
    )
