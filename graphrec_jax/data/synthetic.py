"""The built-in demo catalogue: users, items and item text drawn from latent topics.

Each item belongs to one topic (camping, coffee, jazz, ...) and its title, description,
brand and category path are written from that topic's vocabulary, plus shared filler
words and a little cross-topic noise, so text carries real signal without naming the
item. Each user prefers one to three topics and mostly interacts with popular items
from them. Raw ids are strings ("user_0007", "item_0042") so the demo exercises string
ids end to end. Generation is host numpy, well under a second at demo sizes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from graphrec_jax.data.errors import DataError

# name, category path, brands, product nouns, descriptive words.
TOPICS = (
    ("camping", "Sports & Outdoors, Camping & Hiking",
     "Summit Ridge, TrailCraft, Pinewood Outfitters, Basecamp Gear, Wildpath",
     "tent, sleeping bag, lantern, backpack, camp stove, hammock, tarp, canteen, compass, headlamp",
     "campfire trail waterproof lightweight hiking outdoor wilderness backpacking shelter firewood "
     "mountain forest rugged insulated portable ripstop trekking survival weatherproof"),
    ("coffee", "Grocery & Kitchen, Coffee & Espresso",
     "Morning Roast, Bean Theory, Crema Co, Daily Grind, Highland Beans",
     "espresso machine, burr grinder, french press, pour-over kettle, coffee beans, mug, milk frother, "
     "paper filters, drip brewer, cold brew jar",
     "arabica roast brew barista aroma crema latte cappuccino caffeine dark single-origin burr steam "
     "bitter smooth morning ground decaf mocha"),
    ("jazz", "Music, Jazz",
     "Blue Smoke Records, Midnight Swing, Bebop Press, Velvet Note, Harlem Sound",
     "vinyl record, album, box set, songbook, saxophone reeds, trumpet mute, live recording, anthology, "
     "compact disc, sheet music",
     "saxophone trumpet bebop swing improvisation quartet trio bass piano drummer ballad standards "
     "groove blues bandleader soloist harmony rhythm nightclub"),
    ("gardening", "Patio, Lawn & Garden, Gardening",
     "Green Thumb, Bloomfield, Rootwise, Meadow & Co, Sprout Works",
     "trowel, pruning shears, watering can, seed kit, raised bed, compost bin, hose nozzle, planter, "
     "garden gloves, rake",
     "soil seeds compost bloom perennial herbs vegetable organic mulch fertilizer seedling flowers "
     "weeding harvest greenhouse roots tomato sunflower"),
    ("astronomy", "Science & Education, Astronomy",
     "Starward Optics, Nebula Labs, Orion Field, Celestia, Deep Sky Instruments",
     "telescope, star chart, eyepiece, equatorial mount, binoculars, planisphere, red flashlight, "
     "moon filter, finder scope, observing guide",
     "stars planets galaxy nebula lunar constellation orbit refractor reflector aperture magnification "
     "comet meteor eclipse cosmos observatory saturn jupiter"),
    ("baking", "Kitchen & Dining, Bakeware",
     "Golden Crust, Flour Mill Kitchen, Sweet Oven, Rise & Bake, Pastry Lane",
     "loaf pan, mixing bowl, rolling pin, cake tin, whisk, cookie sheet, proofing basket, piping set, "
     "measuring cups, stand mixer",
     "flour dough sourdough yeast butter sugar pastry frosting knead oven crust bread cookies vanilla "
     "cinnamon muffin nonstick icing"),
    ("yoga", "Sports & Outdoors, Yoga & Pilates",
     "Lotus Flow, Zen Balance, StretchWell, Mindful Motion, Asana Studio",
     "yoga mat, foam block, stretching strap, meditation cushion, resistance band, foam roller, bolster, "
     "yoga towel, balance ball, practice guide",
     "stretch flexibility breathing pose meditation balance core posture calm mindfulness nonslip "
     "cushioned relaxation strength pilates flow wellness asana"),
    ("photography", "Electronics, Camera & Photo",
     "Aperture Pro, Lightbox, ShutterLine, Focal Point, Prism Imaging",
     "camera lens, tripod, camera bag, memory card, speedlight, lens filter, remote shutter, light stand, "
     "photo reflector, battery grip",
     "shutter exposure portrait landscape zoom focus pixel mirrorless bokeh lighting sensor "
     "wide-angle telephoto image megapixel autofocus viewfinder"),
    ("knitting", "Arts & Crafts, Knitting & Crochet",
     "Woolly Workshop, Purl & Loop, Cozy Skein, Needle Nook, Yarn Barn",
     "yarn, knitting needles, crochet hook, pattern book, stitch markers, skein, wool bundle, "
     "project tote, sweater kit, scarf kit",
     "wool stitch purl knit crochet cozy merino cable scarf sweater mittens handmade soft alpaca "
     "cotton chunky blanket beanie"),
    ("cycling", "Sports & Outdoors, Cycling",
     "Velo Works, Chainline, Roadrunner Cycles, Spoke & Pedal, Crank House",
     "bike helmet, bike light, saddle, floor pump, bottle cage, chain lube, cycling jersey, "
     "cycling gloves, bike lock, repair kit",
     "bicycle pedal gear chain tire wheel road commute speed brake spokes derailleur cadence ride "
     "handlebar cyclist gravel peloton"),
    ("aquarium", "Pet Supplies, Fish & Aquatic Pets",
     "Coral Reef Co, AquaLife, Blue Lagoon, FinCare, Tidewater",
     "fish tank, aquarium filter, tank heater, aquarium gravel, fish food, water conditioner, air pump, "
     "aquatic plants, fish net, water test kit",
     "fish tropical freshwater saltwater coral goldfish betta algae filtration reef aquatic shrimp "
     "pebbles guppy cichlid oxygen aquarist"),
    ("woodworking", "Tools & Home Improvement, Woodworking",
     "Oak & Iron, Timbercraft, Grainline Tools, Workbench Co, Dovetail Supply",
     "chisel set, hand plane, bar clamp, japanese saw, sandpaper pack, wood glue, router bits, "
     "workbench, mallet, carving knife",
     "wood timber oak walnut grain carving joinery dovetail sanding sawdust lumber furniture varnish "
     "handcrafted maple cedar woodshop"),
)  # fmt: skip
FILLER_WORDS = (
    "quality great new classic premium durable compact everyday perfect gift easy design best home "
    "value deluxe essential favorite original reliable simple practical modern beginner professional"
).split()
_SECONDS_PER_DAY = 86_400
_START_TIME = 1_600_000_000  # 2020-09-13, so timestamps look like real Unix seconds


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _id_names(prefix: str, count: int) -> list[str]:
    width = max(4, len(str(count - 1)))
    return [f"{prefix}_{index:0{width}d}" for index in range(count)]


def item_ids(num_items: int) -> list[str]:
    """The raw item ids of a catalogue of `num_items`: "item_0000", "item_0001", ... (index order)."""
    return _id_names("item", num_items)


def cold_item_ids(num_items: int, cold_item_ratio: float) -> list[str]:
    """The raw ids of the catalogue's newest items, which are cold when `cold_item_ratio` > 0.

    They are the last `round(cold_item_ratio * num_items)` items; `generate_catalogue` dates
    all their interactions after every other interaction of the same user.
    """
    num_cold = int(np.floor(cold_item_ratio * num_items + 0.5)) if cold_item_ratio > 0 else 0
    return item_ids(num_items)[num_items - num_cold :]


def generate_catalogue(
    num_users: int,
    num_items: int,
    num_topics: int,
    interactions_per_user: int,
    cold_item_ratio: float = 0.0,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Draws a topical catalogue. Deterministic for a seed; not jittable (host numpy).

    Returns:
      interactions: a table with columns user_id (str), item_id (str), rating (int64, 1 to 5)
        and timestamp (int64 Unix seconds, increasing along each user's sequence); one row
        per distinct (user, item), about `interactions_per_user` rows per user.
      item_text: `[num_items]` dicts with "title", "description", "brand", "categories";
        entry i describes item id `item_ids(num_items)[i]` ("item_0042" for i = 42).
    """
    if not 1 <= num_topics <= len(TOPICS):
        raise DataError(f"data.synthetic.num_topics={num_topics} must be between 1 and {len(TOPICS)}")
    if num_users < 1 or num_items < num_topics or interactions_per_user < 1:
        raise DataError(
            "data.synthetic needs num_users >= 1, num_items >= num_topics and interactions_per_user >= 1; "
            f"got {num_users}, {num_items}, {num_topics}, {interactions_per_user}"
        )
    if not 0.0 <= cold_item_ratio < 1.0:
        raise DataError(f"data.synthetic.cold_item_ratio={cold_item_ratio} must be in [0, 1)")
    rng = np.random.default_rng(seed)
    item_topics = rng.permutation(np.arange(num_items) % num_topics)
    # Zipf-like popularity with a random order, so popular items are spread over topics.
    popularity = 1.0 / (1.0 + rng.permutation(num_items)) ** 0.6
    item_text = [_describe_item(rng, int(topic), num_topics) for topic in item_topics]
    num_cold = len(cold_item_ids(num_items, cold_item_ratio))
    is_cold = np.arange(num_items) >= num_items - num_cold

    topic_popularity = np.zeros((num_topics, num_items))
    topic_popularity[item_topics, np.arange(num_items)] = popularity
    topic_popularity /= topic_popularity.sum(axis=1, keepdims=True)
    global_popularity = popularity / popularity.sum()

    # Each user likes 1 to 3 topics with Dirichlet weights: `[num_users, num_topics]`.
    num_liked = rng.integers(1, 4, size=num_users)
    topic_rank = np.argsort(rng.random((num_users, num_topics)), axis=1).argsort(axis=1)
    likes = topic_rank < num_liked[:, None]
    weights = rng.gamma(1.0, size=(num_users, num_topics)) * likes
    weights /= weights.sum(axis=1, keepdims=True)
    # 85 % of the choice mass on the liked topics, the rest on popularity alone (noise).
    probability = 0.85 * weights @ topic_popularity + 0.15 * global_popularity
    base = min(2, interactions_per_user)  # every user gets a few; the mean stays interactions_per_user
    counts = np.minimum(num_items, base + rng.poisson(interactions_per_user - base, size=num_users))
    # Gumbel top-k: sorting log p + Gumbel noise draws each user's sequence without replacement.
    keys = np.log(probability) + rng.gumbel(size=probability.shape)
    order = np.argsort(-keys, axis=1)
    taken = np.arange(num_items)[None, :] < counts[:, None]
    users = np.repeat(np.arange(num_users), counts)
    items = order[taken]
    position = np.arange(len(items))
    # New (cold) items come last in each user's sequence, so they are the newest interactions.
    resorted = np.lexsort((position, is_cold[items], users))
    items = items[resorted]

    in_liked = likes[users, item_topics[items]]
    liked_rating = rng.choice([3, 4, 5], size=len(items), p=[0.15, 0.4, 0.45])
    other_rating = rng.choice([1, 2, 3, 4], size=len(items), p=[0.2, 0.3, 0.3, 0.2])
    ratings = np.where(in_liked, liked_rating, other_rating)
    starts = _START_TIME + rng.integers(0, 120 * _SECONDS_PER_DAY, size=num_users)
    gaps = rng.exponential(2.0 * _SECONDS_PER_DAY, size=len(items)).astype(np.int64) + 60
    elapsed = np.cumsum(gaps)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    elapsed -= np.repeat(elapsed[first] - gaps[first], counts)  # restart the clock for each user

    interactions = pd.DataFrame(
        {
            "user_id": np.asarray(_id_names("user", num_users), dtype=object)[users],
            "item_id": np.asarray(item_ids(num_items), dtype=object)[items],
            "rating": ratings.astype(np.int64),
            "timestamp": (np.repeat(starts, counts) + elapsed).astype(np.int64),
        }
    )
    return interactions, item_text


_PARSED_TOPICS = tuple(
    (categories, _split_list(brands), _split_list(nouns), words.split())
    for _, categories, brands, nouns, words in TOPICS
)


def _describe_item(rng: np.random.Generator, topic: int, num_topics: int) -> dict[str, str]:
    """Title, description, brand and category path written mostly from `topic`'s vocabulary."""
    categories, brands, nouns, vocabulary = _PARSED_TOPICS[topic]
    brand = brands[int(rng.integers(len(brands)))]
    noun = nouns[int(rng.integers(len(nouns)))]

    def pick(words: list[str]) -> str:
        return words[int(rng.integers(len(words)))]

    def word() -> str:
        draw = rng.random()
        if draw < 0.12:  # cross-topic noise keeps text from being a clean topic label
            return pick(_PARSED_TOPICS[int(rng.integers(num_topics))][3])
        if draw < 0.4:
            return pick(FILLER_WORDS)
        return pick(vocabulary)

    title = f"{brand} {word().capitalize()} {noun.title()}"
    if rng.random() < 0.5:
        title += f", {word().capitalize()} {word().capitalize()}"
    sentences = [f"A {word()} {noun} for {word()} and {word()}."]
    for _ in range(int(rng.integers(1, 3))):
        body = " ".join(word() for _ in range(int(rng.integers(5, 10))))
        sentences.append(body.capitalize() + ".")
    return {"title": title, "description": " ".join(sentences), "brand": brand, "categories": categories}


def generate_friendships(
    user_ids: np.ndarray, item_ids: np.ndarray, friends_per_user: int, seed: int = 0
) -> pd.DataFrame:
    """Friendships among the catalogue's users, with homophily: each user befriends
    `friends_per_user` others drawn with probability proportional to `exp(4 * cosine)` of the two
    users' item profiles, so friends tend to share tastes (as real friends do).

    Args:
      user_ids, item_ids: `[n]` raw ids of the interactions (`generate_catalogue`'s table).
      friends_per_user: friends each user picks (friendships are mutual, so most users end up
        with more).
      seed: the draw's seed.

    Returns:
      a table with columns user_id, friend_id (raw ids), one row per pick. Host numpy.
    """
    users, user_codes = np.unique(np.asarray(user_ids), return_inverse=True)
    items, item_codes = np.unique(np.asarray(item_ids), return_inverse=True)
    num_users = len(users)
    if num_users < 2 or friends_per_user < 1:
        return pd.DataFrame({"user_id": [], "friend_id": []})
    profile = np.zeros((num_users, len(items)))
    np.add.at(profile, (user_codes, item_codes), 1.0)
    profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-12)
    similarity = profile @ profile.T
    rng = np.random.default_rng([seed, 17])
    keys = 4.0 * similarity + rng.gumbel(size=similarity.shape)
    np.fill_diagonal(keys, -np.inf)
    count = min(friends_per_user, num_users - 1)
    chosen = np.argsort(-keys, axis=1)[:, :count]
    return pd.DataFrame({"user_id": np.repeat(users, count), "friend_id": users[chosen.ravel()]})
