"""An index run in its own process that holds at a point it reports, for the tests that kill a run
half way: it never finishes before the kill, however busy the machine."""

from __future__ import annotations

import textwrap


def held_index_script(source: str, collection: str, held_at: str = "Document 30") -> str:
    """Python code that runs index-corpus on ``source``; the embedding of any text naming ``held_at``
    never returns, so the batches before it are indexed and the run waits there to be killed."""
    return textwrap.dedent(f"""
        import asyncio, re
        from cli.prefectenv import prefect_defaults

        prefect_defaults()  # as the CLI does: the local Prefect server gets 90 s to start on a busy machine
        from citadel.embedders import HashingEmbedder, WordLlamaEmbedder
        from flows.index_corpus import index_corpus

        def holding(embed):
            async def held(self, texts):
                if any(re.search(r"\\b{held_at}\\b", text) for text in texts):
                    await asyncio.Event().wait()
                return await embed(self, texts)
            return held

        for in_process in (HashingEmbedder, WordLlamaEmbedder):  # whichever the run's settings build
            in_process.embed = holding(in_process.embed)
        asyncio.run(index_corpus({source!r}, collection={collection!r}))
    """)
