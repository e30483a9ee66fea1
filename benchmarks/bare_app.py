"""The baseline for /predict throughput: a bare FastAPI endpoint under the same uvicorn settings."""

from typing import Any

import uvicorn
from fastapi import FastAPI

app = FastAPI()


@app.post("/predict")
def predict(body: dict[str, Any]) -> dict[str, Any]:
    return {"predictions": [{"ts": "2024-01-01T00:00:00Z", "rows": len(body.get("rows", []))}]}


if __name__ == "__main__":
    import sys

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, access_log=False)
