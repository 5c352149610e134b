"""`sgldeploy verify`: measure a live endpoint against the deployment's SLO and the plan's figures."""
