"""The client side of a federation: what a node does with the server's Messages.

:mod:`fedkd.client_app` registers the Flower handlers; the logic lives here, one
concern per module:

* :mod:`~fedkd.client.run_config` - the fedkd config carried by a Flower run config.
* :mod:`~fedkd.client.node` - who the node is (partition id) and its per-call setup.
* :mod:`~fedkd.client.public_data` - tensors every node of a run shares (proxy, test set).
* :mod:`~fedkd.client.private_data` - the node's own data (partition or device file).
* :mod:`~fedkd.client.node_state` - what persists in the node's Context (student, aux).
* :mod:`~fedkd.client.streams` - the node's random seeds and generators.
* :mod:`~fedkd.client.train_job` - a train instruction decoded and checked into a job.
* :mod:`~fedkd.client.local_dp` - the DP parameters the node applies to its upload.
* :mod:`~fedkd.client.extra_terms` - the catalogue method's client-side term of a job.
* :mod:`~fedkd.client.trainer` - one job trained, sequentially or with DP-SGD.
* :mod:`~fedkd.client.upload` - the trained student's logits made ready to leave the node.
* :mod:`~fedkd.client.train_reply` - a finished job saved and turned into its reply.
* :mod:`~fedkd.client.cohort` - many nodes' train jobs at once (the vectorized engine).
* :mod:`~fedkd.client.handlers` - evaluate and query handlers' logic.
* :mod:`~fedkd.client.replies` - the reply Message every handler sends.
"""
