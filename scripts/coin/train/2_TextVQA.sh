#!/usr/bin/env bash
# CoIN task 2/8: TextVQA (variables: scripts/coin/train/coin_task.sh)
exec bash "$(dirname "$0")/coin_task.sh" 2 TextVQA
