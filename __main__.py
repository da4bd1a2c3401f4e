"""vllm-stack: read config -> plan -> VllmStack -> exports."""

import pulumi

from components.pulumi_config import clean_errors, read_config
from components.stack import VllmStack, VllmStackArgs

with clean_errors():
    plan, secrets = read_config(pulumi.Config())
    stack = VllmStack("vllm", VllmStackArgs(plan=plan, secrets=secrets))
    pulumi.export("gatewayUrl", stack.gateway_url)
    pulumi.export("webuiUrl", stack.webui_url)
    pulumi.export("metricsUrl", stack.metrics_url)
    pulumi.export("grafanaUrl", stack.grafana_url)
    pulumi.export("grafanaAdminPassword", stack.grafana_admin_password)  # a secret: pulumi stack output --show-secrets
    pulumi.export("servedModels", stack.served_models)
    pulumi.export("gpuPlan", stack.gpu_plan)
