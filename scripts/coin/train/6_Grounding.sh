#!/usr/bin/env bash
# CoIN task 6/8: Grounding (variables: scripts/coin/train/coin_task.sh)
exec bash "$(dirname "$0")/coin_task.sh" 6 Grounding
