#!/usr/bin/env bash
# CoIN task 8/8: OCRVQA (variables: scripts/coin/train/coin_task.sh)
exec bash "$(dirname "$0")/coin_task.sh" 8 OCRVQA
