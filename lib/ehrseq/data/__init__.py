"""The data layer: tables -> events -> sequences -> tensors.

Nothing in here imports models, losses or metrics.
"""
