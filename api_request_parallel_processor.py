"""The classic parallel-processor command line, now run by apiproc.

    python api_request_parallel_processor.py --requests_filepath examples/requests.jsonl \
        --save_filepath results.jsonl --max_requests_per_minute 40 --max_tokens_per_minute 16000

Accepts exactly the flags of the anthropic-cookbook `parallel_calling` script (and its
defaults: 40 requests/min, 16,000 tokens/min, 5 attempts, INFO logging) and writes the
classic `[request, response, metadata]` lines. `apiproc run --help` shows what more the
tool can do.
"""

from apiproc.cli import classic_main

if __name__ == "__main__":
    classic_main()
