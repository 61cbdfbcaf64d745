#!/bin/bash
# The randomized fault campaign (tests/campaign.sh), short form: 20 faults
# from a fixed seed (VMCKPT_CAMPAIGN_SEED to try another). `make campaign`
# runs 100.
exec bash "$(dirname "$0")/../campaign.sh" "${VMCKPT_CAMPAIGN_SEED:-20261130}" "${VMCKPT_CAMPAIGN_FAULTS:-20}"
