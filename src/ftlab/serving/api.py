"""The model behind `POST /predict`: a LitServe API whose workers run `ftlab.inference.prediction`'s
`scores` on dynamically batched requests, exactly as `ftlab.predict` does on batches of files.

No `from __future__ import annotations` here: LitServe reads `decode_request`'s parameter annotation as the
endpoint's request type, and it must be the real object (a FastAPI dependency that reads the upload).
"""

import base64
from typing import Annotated, Any

import litserve as ls
import torch
from fastapi import Depends
from pydantic import BaseModel, Field
from torchvision.io import encode_png

from ftlab.inference.checkpoint import TrainedModel
from ftlab.inference.exported import Model, load_model
from ftlab.inference.gradcam import Explainer
from ftlab.inference.prediction import gradcam_overlays, scores, to_prediction
from ftlab.serving.uploads import read_upload

Upload = Annotated[dict[str, Any], Depends(read_upload)]


class PredictResponse(BaseModel):
    """`POST /predict`'s answer."""

    top1: str = Field(description="the most probable class")
    probs: dict[str, float] = Field(
        description="class -> probability, most probable first (calibrated when the checkpoint holds a "
        "temperature); multi-label: every label's sigmoid probability"
    )
    labels: list[str] | None = Field(
        None, description="multi-label checkpoints: the labels whose probability reaches their threshold"
    )
    gradcam_png: str | None = Field(
        None, description="explain=true: the Grad-CAM overlay of the top class, a base64 PNG"
    )


class ClassifierAPI(ls.LitAPI):
    """One worker: the checkpoint's model on its device; each batch of uploads through `scores`."""

    def __init__(self, ckpt_path: str, top_k: int | None, max_batch_size: int, batch_timeout: float) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/predict")
        self.ckpt_path = ckpt_path
        self.top_k = top_k
        self.model: Model | None = None
        self.explainer: Explainer | None = None

    def setup(self, device: str) -> None:
        self.model = load_model(self.ckpt_path, device)  # a checkpoint or a file written by ftlab.export

    def decode_request(self, request: Upload, **kwargs: Any) -> dict[str, Any]:
        return request  # checked and preprocessed in the HTTP server (ftlab.serving.uploads)

    def predict(self, x: Any, **kwargs: Any) -> Any:
        """A batch (list of uploads) with max_batch_size > 1; one upload without batching."""
        assert self.model is not None
        items = x if isinstance(x, list) else [x]
        images = torch.stack([torch.from_numpy(item["image"]) for item in items])
        rows = scores(self.model, images)
        results = []
        for row in rows:
            answer = to_prediction(self.model, "", row, self.top_k).as_dict()
            del answer["path"]
            results.append(answer)
        asked = [i for i, item in enumerate(items) if item["explain"]]
        if asked:
            if self.explainer is None:
                assert isinstance(self.model, TrainedModel)  # uploads refuse explain=true for exported files
                self.explainer = Explainer(self.model.module)
            shown = torch.stack([torch.from_numpy(items[i]["shown"]) for i in asked])
            overlays = gradcam_overlays(self.explainer, images[asked].to(self.model.device), shown)
            for i, drawn in zip(asked, overlays, strict=True):
                results[i]["gradcam_png"] = base64.b64encode(encode_png(drawn).numpy().tobytes()).decode()
        return results if isinstance(x, list) else results[0]

    def encode_response(self, output: dict[str, Any], **kwargs: Any) -> PredictResponse:
        return PredictResponse(**output)
