"""`ftlab serve`: a self-hosted, OpenAI-compatible fine-tuning API.

Code written for hosted fine-tuning keeps working with only `base_url` changed:

    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="…")
    f = client.files.create(file=open("train.jsonl", "rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=f.id, model="smollm2-135m-instruct",
                                         hyperparameters={"n_epochs": 3}, suffix="my-task")
    client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=100)
    client.chat.completions.create(model=job.fine_tuned_model, messages=[...])

Layout (routes are thin; each module below does one thing):
- `app`: the FastAPI routes under `/v1` (files, fine_tuning/jobs with events/checkpoints/cancel, models,
  chat/completions) and `/health`.
- `files`: uploads stored under `FTLAB_HOME/files/<file-id>`, validated line by line at upload.
- `jobs`: job creation (files and settings validated again, "auto" resolved), the OpenAI views of jobs, events
  and checkpoints, cancellation.
- `worker`: the training worker (`ftlab worker`; `ftlab serve` starts one by default) taking jobs from the
  database queue, and the recovery of jobs whose worker died (resume from the last checkpoint, or fail).
- `catalog`: the models a client can name (base models, `ft:<base>:<owner>:<suffix>:<id>`, `…:ckpt-step-N`;
  resolved by `ftlab.infer.refs`) as OpenAI model objects.
- `chat`: generation with a bounded LRU cache of loaded (base, adapter) pairs; SSE streaming; constrained
  outputs (`response_format` json_schema / json_object, and ftlab's `labels` extension).
- `auth`: API keys (`ftlab keys create`), required when binding to anything but loopback.
- `errors`: OpenAI's error shape `{"error": {"message", "type", "param", "code"}}`.

Extensions beyond OpenAI's API: `model` may be a local Hugging Face folder; `hyperparameters` (or
`method.supervised.hyperparameters`) may carry any `TrainConfig` field such as `lora_r` or `adapter` (typed from
TrainConfig; `method: lora|dora|full` there is adapter's old spelling); a job without a `seed` uses 42; chat
completions accept `labels: [...]` (via `extra_body`) to make the reply exactly one of those labels.
"""
