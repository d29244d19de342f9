"""The DACSM data preprocessor: plain and paired (source, target) batches."""

from mmpretrain.models.utils import ClsDataPreprocessor
from mmpretrain.registry import MODELS

DOMAINS = ('source', 'target')


@MODELS.register_module()
class UDADataPreprocessor(ClsDataPreprocessor):
    """:class:`ClsDataPreprocessor` that also takes paired batches.

    A paired batch (from :class:`UDAPairDataset`) is a dict with
    ``source`` and ``target`` sub-batches; each is preprocessed as a plain
    batch and the result is ``dict(inputs=dict(source=..., target=...),
    data_samples=dict(source=..., target=...))``. Plain batches pass
    through unchanged, so one model trains stage 1 (source only) and
    stage 2 (paired) and evaluates as usual.

    Args:
        non_blocking (bool): Copy the images to the device asynchronously.
            Defaults to True (the host's default is False).
        *args, **kwargs: :class:`ClsDataPreprocessor` arguments.
    """

    def __init__(self, *args, non_blocking: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # ClsDataPreprocessor does not pass the flag to mmengine's base.
        self._non_blocking = non_blocking

    def forward(self, data: dict, training: bool = False) -> dict:
        """Preprocess a plain or a paired batch."""
        if isinstance(data, dict) and set(DOMAINS) <= set(data):
            preprocess = super().forward
            parts = {d: preprocess(data[d], training) for d in DOMAINS}
            return dict(
                inputs={d: parts[d]['inputs'] for d in DOMAINS},
                data_samples={d: parts[d]['data_samples'] for d in DOMAINS},
            )
        return super().forward(data, training)
