"""The local runner: compiled KFP pipelines (IR) executed on one machine, through Prefect or kfp.local."""
