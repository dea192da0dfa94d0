# Report stage (owned by the report work; placeholder until it lands).
# Contract: defines REPORT_TARGETS, the list of report outputs `rule all` requests.
REPORT_TARGETS = []
