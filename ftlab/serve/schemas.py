"""Request bodies of the API, mirroring openai-python's parameter types.

Responses are built with openai-python's own response models (`openai.types…`), so the shapes — and their
quirks, like `hyperparameters` on every job or `status` on every file — are exactly what the client parses.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SUFFIX_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


class Hyperparameters(BaseModel):
    """OpenAI's three hyperparameters; any other `TrainConfig` field (lora_r, lora_alpha, …) may ride along."""

    model_config = ConfigDict(extra="allow")

    batch_size: int | Literal["auto"] | None = None
    learning_rate_multiplier: float | Literal["auto"] | None = None
    n_epochs: int | Literal["auto"] | None = None


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | None = None
    dpo: dict[str, Any] | None = None
    reinforcement: dict[str, Any] | None = None


class JobCreate(BaseModel):
    """`POST /v1/fine_tuning/jobs` (openai.types.fine_tuning.JobCreateParams)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = Field(None, pattern=SUFFIX_PATTERN, description="up to 64 letters, digits, '.', '_' or '-'")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
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

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type", "text") == "text")
        return self.content or ""


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
    seed: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    labels: list[str] | None = Field(
        None, description="ftlab extension: constrain the reply to exactly one of these labels"
    )
