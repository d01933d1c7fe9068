"""oxen-queue: an asyncio SDK for Oxen.ai's generation queue."""

from __future__ import annotations

from types import FunctionType as _FunctionType

from ._batch import BatchItem as BatchItem
from ._batch import ProgressCallback as ProgressCallback
from ._batch import as_completed as as_completed
from ._batch import run_batch as run_batch
from ._budget import SpendSummary as SpendSummary
from ._client import AsyncClient as AsyncClient
from ._exceptions import AmbiguousEnqueueError as AmbiguousEnqueueError
from ._exceptions import APIConnectionError as APIConnectionError
from ._exceptions import APIError as APIError
from ._exceptions import APIResponseValidationError as APIResponseValidationError
from ._exceptions import APIStatusError as APIStatusError
from ._exceptions import APITimeoutError as APITimeoutError
from ._exceptions import AuthenticationError as AuthenticationError
from ._exceptions import BadRequestError as BadRequestError
from ._exceptions import BudgetExceededError as BudgetExceededError
from ._exceptions import ClientClosedError as ClientClosedError
from ._exceptions import CostUnknownError as CostUnknownError
from ._exceptions import DownloadError as DownloadError
from ._exceptions import GenerationCancelledError as GenerationCancelledError
from ._exceptions import GenerationError as GenerationError
from ._exceptions import GenerationFailedError as GenerationFailedError
from ._exceptions import GenerationTimeoutError as GenerationTimeoutError
from ._exceptions import InvalidParamsError as InvalidParamsError
from ._exceptions import NotFoundError as NotFoundError
from ._exceptions import OxenError as OxenError
from ._exceptions import PollTimeoutError as PollTimeoutError
from ._exceptions import RateLimitError as RateLimitError
from ._exceptions import ServerError as ServerError
from ._generation import Generation as Generation
from ._history import GenerationHistory as GenerationHistory
from ._ledger import LedgerError as LedgerError
from ._models import TERMINAL_STATUSES as TERMINAL_STATUSES
from ._models import CompletionEvent as CompletionEvent
from ._models import GenerationPage as GenerationPage
from ._models import GenerationRecord as GenerationRecord
from ._models import GenerationStatus as GenerationStatus
from ._models import ImageResult as ImageResult
from ._models import ImagesResponse as ImagesResponse
from ._models import Model as Model
from ._models import ModelPricing as ModelPricing
from ._models import PricingMethod as PricingMethod
from ._models import VideoResult as VideoResult
from ._models import VideosResponse as VideosResponse
from ._options import GptImage2EditOptions as GptImage2EditOptions
from ._options import GptImage2Options as GptImage2Options
from ._options import KlingV26ProTextToVideoOptions as KlingV26ProTextToVideoOptions
from ._params import GptImage2EditParams as GptImage2EditParams
from ._params import GptImage2Params as GptImage2Params
from ._params import KlingAspectRatio as KlingAspectRatio
from ._params import KlingDuration as KlingDuration
from ._params import KlingV26ProTextToVideoParams as KlingV26ProTextToVideoParams
from ._params import OutputFormat as OutputFormat
from ._params import Quality as Quality
from ._params import Resolution as Resolution
from ._poll import PollPolicy as PollPolicy
from ._retry import RetryPolicy as RetryPolicy
from ._stats import ClientStats as ClientStats
from ._sync import SyncGeneration as SyncGeneration
from ._sync import SyncGenerationHistory as SyncGenerationHistory
from ._sync_client import Client as Client
from ._transport import HttpBackend as HttpBackend
from ._types import DEFAULT as DEFAULT
from ._types import Default as Default
from ._version import __version__ as __version__
from ._watch import CompletionMode as CompletionMode

__all__ = [
    "DEFAULT",
    "TERMINAL_STATUSES",
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AmbiguousEnqueueError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "BatchItem",
    "BudgetExceededError",
    "Client",
    "ClientClosedError",
    "ClientStats",
    "CompletionEvent",
    "CompletionMode",
    "CostUnknownError",
    "Default",
    "DownloadError",
    "Generation",
    "GenerationCancelledError",
    "GenerationError",
    "GenerationFailedError",
    "GenerationHistory",
    "GenerationPage",
    "GenerationRecord",
    "GenerationStatus",
    "GenerationTimeoutError",
    "GptImage2EditOptions",
    "GptImage2EditParams",
    "GptImage2Options",
    "GptImage2Params",
    "HttpBackend",
    "ImageResult",
    "ImagesResponse",
    "InvalidParamsError",
    "KlingAspectRatio",
    "KlingDuration",
    "KlingV26ProTextToVideoOptions",
    "KlingV26ProTextToVideoParams",
    "LedgerError",
    "Model",
    "ModelPricing",
    "NotFoundError",
    "OutputFormat",
    "OxenError",
    "PollPolicy",
    "PollTimeoutError",
    "PricingMethod",
    "ProgressCallback",
    "Quality",
    "RateLimitError",
    "Resolution",
    "RetryPolicy",
    "ServerError",
    "SpendSummary",
    "SyncGeneration",
    "SyncGenerationHistory",
    "VideoResult",
    "VideosResponse",
    "__version__",
    "as_completed",
    "run_batch",
]


# As httpx's and anyio's, public classes and functions report the package as their module: reprs,
# tracebacks, docs and pickles name ``oxen_queue.AsyncClient``, the import users write.
for _value in [globals()[name] for name in __all__]:
    if isinstance(_value, type | _FunctionType) and _value.__module__.startswith(f"{__name__}._"):
        _value.__module__ = __name__
del _value
