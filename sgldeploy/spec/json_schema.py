"""JSON Schema of a stack file, so editors complete and check `stacks/Pulumi.<stack>.yaml`."""

from __future__ import annotations

from typing import Any

from sgldeploy.spec import USAGE_FILE_KEY, DeploymentSpec, PlatformSpec

SECURE_VALUE = {
    "type": "object",
    "properties": {"secure": {"type": "string"}},
    "required": ["secure"],
    "additionalProperties": False,
}


def stack_file_schema() -> dict[str, Any]:
    platform = PlatformSpec.model_json_schema(ref_template="#/$defs/{model}")
    deployment = DeploymentSpec.model_json_schema(ref_template="#/$defs/{model}")
    defs = {
        **platform.pop("$defs", {}),
        **deployment.pop("$defs", {}),
        "PlatformSpec": platform,
        "DeploymentSpec": deployment,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://sgldeploy.dev/schema/sgldeploy.schema.json",
        "title": "sgldeploy stack file (Pulumi.<stack>.yaml)",
        "type": "object",
        "properties": {
            "secretsprovider": {"type": "string"},
            "encryptedkey": {"type": "string"},
            "encryptionsalt": {"type": "string"},
            "environment": {"type": "array", "items": {"type": "string"}},
            "config": {
                "type": "object",
                "properties": {
                    "sgldeploy:platform": {"$ref": "#/$defs/PlatformSpec"},
                    "sgldeploy:deployments": {"type": "array", "items": {"$ref": "#/$defs/DeploymentSpec"}},
                    "sgldeploy:hfToken": {
                        **SECURE_VALUE,
                        "description": "Hugging Face token: pulumi config set "
                        "--secret sgldeploy:hfToken hf_…",
                    },
                    "sgldeploy:apiKey": {
                        **SECURE_VALUE,
                        "description": "Client API key; generated when unset",
                    },
                    "sgldeploy:lockFile": {
                        "type": "string",
                        "description": "Model lock path; default stacks/models.lock.json",
                    },
                    USAGE_FILE_KEY: {
                        "type": "string",
                        "minLength": 1,
                        "description": "YAML of usage assumptions for the usage-based cost lines, relative to "
                        "the stack file's directory; `sgldeploy plan --usage FILE` overrides it",
                    },
                },
                # Any other sgldeploy: key is a typo; provider keys (aws:region, …) belong to their owners.
                "patternProperties": {
                    "^sgldeploy:(?!(platform|deployments|hfToken|apiKey|lockFile|usageFile)$)": False
                },
                "additionalProperties": True,
            },
        },
        "$defs": defs,
    }
