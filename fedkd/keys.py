"""Every record and config key that crosses the wire, as constants."""

# Message content (server -> client)
TARGETS = "targets"  # ArrayRecord: soft targets on a proxy subset
LOGITS = "logits"  # Array inside TARGETS / REPLY_LOGITS: (P, C) float32 logits
PROXY_IDX = "proxy-idx"  # Array inside TARGETS: (P,) int64 proxy rows of the soft targets
KNOWLEDGE = "teacher-knowledge"  # optional Array inside TARGETS: features / attention maps
REPLY_IDX = "reply-idx"  # optional Array inside TARGETS: rows to reply on (default PROXY_IDX)
CONFIG = "config"  # ConfigRecord: per-round hyperparameters
WEIGHTS = "student-weights"  # ArrayRecord: a student state dict (fedavg, feddf), both ways

# Per-round config keys
SERVER_ROUND = "server-round"
LOCAL_EPOCHS = "local-epochs"
TEMPERATURE = "temperature"
ALPHA = "alpha"
LR = "lr"
BASELINE_EPOCHS = "baseline-epochs"
SEND_WEIGHTS = "send-weights"  # bool: reply with the trained student's weights
DP_MODE = "dp-mode"  # privacy.mode ('client_dp', 'dp_sgd') the client applies
DP_NOISE = "dp-noise-multiplier"  # noise std in units of DP_CLIP
DP_CLIP = "dp-clip"  # L2 clip (upload or per-sample gradient)
DP_LOCAL = "dp-local"  # client_dp: the client adds the noise itself

# Reply content (client -> server)
REPLY_LOGITS = "proxy-logits"  # ArrayRecord with LOGITS
METRICS = "metrics"  # MetricRecord
NUM_EXAMPLES = "num-examples"
PARTITION_ID = "partition-id"
TRAIN_LOSS = "train-loss"
DISTILL_LOSS = "distill-loss"
CE_LOSS = "ce-loss"
TEST_ACCURACY = "test-accuracy"
DP_APPLIED_NOISE = "dp-applied-noise-multiplier"  # local client_dp: what the client used
DP_STEPS = "dp-steps"  # dp_sgd: DP-SGD steps the client took this round
LOCAL_ONLY_ACCURACY = "local-only-accuracy"
CLASS_HISTOGRAM = "class-histogram"

# Node config keys (set by the simulation engines or a SuperNode's --node-config)
NODE_PARTITION_ID = "partition-id"
NODE_NUM_PARTITIONS = "num-partitions"
NODE_DATA_PATH = "data-path"  # a device's own .npz with x and y (deployment)
# local client_dp floor a device owner sets for their own device (never lowered by a server)
NODE_LOCAL_DP_NOISE = "local-dp-noise-multiplier"
NODE_LOCAL_DP_CLIP = "local-dp-clip"

# Run config keys (pyproject [tool.flwr.app.config] or the in-process engine)
RUN_CONFIG_JSON = "fedkd-config-json"  # resolved config as JSON (in-process engine)
RUN_CONFIG_PATH = "config"  # TOML path relative to the app directory (flwr run)
RUN_OVERRIDES = "overrides"  # ';'-separated dotted.key=value overrides (flwr run)
ENV_CONFIG_JSON = "FEDKD_CONFIG_JSON"  # env fallback for run_simulation (no run config)
RUN_OUT = "out"  # output directory of the ServerApp (flwr run)

# Message actions
QUERY_INFO = "query"  # client reports partition id, size and class histogram
QUERY_LOCAL_ONLY = "query.local_only"  # client trains the local-only baseline
