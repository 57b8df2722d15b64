"""Request bodies of the API, mirroring openai-python's parameter types.

Responses are built with openai-python's own response models (`openai.types…`), so the shapes — and their
quirks, like `hyperparameters` on every job or `status` on every file — are exactly what the client parses.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.fields import FieldInfo

from ftlab.config import TrainConfig, upgrade_settings
from ftlab.data.schema import FunctionCall, ToolCall
from ftlab.data.tools import FunctionDefinition, Tool, content_text

# TrainConfig fields a job sets from its own parameters (init_adapter from `model` when that is an ft: name: a
# request never names a folder of the server's)
JOB_FIELDS = ("model", "method", "seed", "suffix", "init_adapter")


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:  # hyperparameters.method lora|dora|full: the old spelling of adapter
        return upgrade_settings(data) if isinstance(data, dict) else data


def _optional(field: FieldInfo) -> tuple[Any, None]:
    """A TrainConfig field as a request parameter: its type, range and description; None when not given."""
    return Annotated[field.rebuild_annotation() | None, Field(description=field.description)], None


# OpenAI's three hyperparameters and every other TrainConfig field (lora_r, adapter, …), typed from TrainConfig.
Hyperparameters = create_model(
    "Hyperparameters",
    __base__=_Settings,
    **{name: _optional(field) for name, field in TrainConfig.model_fields.items() if name not in JOB_FIELDS},
)


class MethodSettings(BaseModel):
    """`method.supervised` or `method.dpo` (openai's `SupervisedMethod`, `DpoMethod`): their hyperparameters,
    OpenAI's (`beta` too for dpo) and every other TrainConfig setting."""

    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: MethodSettings | None = None
    dpo: MethodSettings | None = None
    reinforcement: dict[str, Any] | None = None


class JobCreate(BaseModel):
    """`POST /v1/fine_tuning/jobs` (openai.types.fine_tuning.JobCreateParams)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = None  # checked, like seed, by TrainConfig
    seed: int | None = None  # TrainConfig's default (42) when not given
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    include_usage: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCall | None = None

    def text(self) -> str:
        return content_text(self.content)


class ChatCompletionCreate(BaseModel):
    """`POST /v1/chat/completions` (the parameters ftlab honours; others OpenAI defines are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1, le=16)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # what torch.manual_seed accepts
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    labels: list[str] | None = Field(
        None, description="ftlab extension: constrain the reply to exactly one of these labels"
    )
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDefinition] | None = None  # the legacy spelling of tools
    function_call: Literal["none", "auto"] | dict[str, Any] | None = None
