"""Tools beside the worker, not part of it (the worker image leaves them out):

    python -m device_ops_worker_tools.demo_models   the offline demo models `npm start` prepares
    python -m device_ops_worker_tools.client        a command-line client that calls a worker directly
"""
