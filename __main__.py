"""vllm-stack: read config -> plan -> VllmStack -> exports."""

import pulumi

from components.program import read_config, run

plan, secrets = read_config(pulumi.Config())
stack = run(plan, secrets)
pulumi.export("gatewayUrl", stack.gateway_url)
pulumi.export("webuiUrl", stack.webui_url)
pulumi.export("metricsUrl", stack.metrics_url)
pulumi.export("servedModels", stack.served_models)
pulumi.export("gpuPlan", stack.gpu_plan)
