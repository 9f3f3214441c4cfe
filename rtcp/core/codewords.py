"""The word list of one-time codes (rtcp recv --code): 256 short, distinct, common words.

A code is a number below 1000 and three of these words, about 2^34 choices: SPAKE2 gives an
attacker one online guess per attempt, and the receiver allows MAX_UNCONFIRMED_CODE_ATTEMPTS.
"""

CODE_WORDS: tuple[str, ...] = (
    "acid", "acorn", "actor", "adobe", "agent", "alarm", "album", "alpha", "amber", "anchor",
    "angle", "apple", "april", "arena", "argon", "arrow", "atlas", "attic", "audio", "autumn",
    "bacon", "badge", "bagel", "baker", "bamboo", "banana", "banjo", "barrel", "basil", "basket",
    "beach", "beacon", "bear", "beaver", "bingo", "bishop", "blade", "blanket", "blossom", "boat",
    "bonus", "border", "bottle", "bracket", "brave", "bread", "breeze", "brick", "bridge",
    "bronze", "brush", "bubble", "bucket", "buffalo", "bugle", "button", "cabin", "cable",
    "cactus", "camel", "camera", "candle", "canoe", "canyon", "carbon", "carpet", "carrot",
    "castle", "cedar", "cello", "chalk", "cheese", "cherry", "chess", "cider", "circus", "citrus",
    "clock", "clover", "cobalt", "cocoa", "comet", "copper", "coral", "cotton", "cowboy", "crane",
    "crayon", "cricket", "crystal", "cupcake", "curtain", "cycle", "dagger", "daisy", "dancer",
    "delta", "denim", "desert", "diamond", "diesel", "dinner", "dolphin", "domino", "donkey",
    "dragon", "drum", "eagle", "echo", "eclipse", "elbow", "ember", "engine", "falcon", "feather",
    "fiddle", "flamingo", "flute", "forest", "fossil", "fox", "galaxy", "garden", "garlic",
    "gecko", "giant", "ginger", "glacier", "globe", "goblin", "gopher", "granite", "grape",
    "guitar", "hammer", "harbor", "harvest", "hazel", "helmet", "hero", "honey", "horizon",
    "hotel", "igloo", "indigo", "island", "ivory", "jacket", "jaguar", "jasmine", "jelly",
    "jigsaw", "jungle", "kayak", "kettle", "kiwi", "koala", "ladder", "lagoon", "lantern", "laser",
    "lemon", "leopard", "lilac", "lion", "lizard", "lobster", "magnet", "mango", "maple", "marble",
    "meadow", "melon", "meteor", "mirror", "mitten", "monkey", "mosaic", "motor", "muffin",
    "nectar", "needle", "nickel", "noodle", "nugget", "oasis", "ocean", "octopus", "olive",
    "onion", "opera", "orange", "orbit", "orchid", "otter", "oxygen", "paddle", "panda", "panther",
    "parrot", "peanut", "pebble", "pencil", "pepper", "piano", "pickle", "pilot", "pirate",
    "planet", "plum", "pocket", "poet", "polar", "pony", "potato", "pretzel", "puzzle", "python",
    "quartz", "rabbit", "radar", "radio", "raven", "ribbon", "river", "robot", "rocket", "rose",
    "ruby", "saddle", "salmon", "sandal", "saturn", "scarf", "school", "shadow", "shark", "silver",
    "sketch", "sphinx", "spider", "sponge", "squid", "stable", "summer", "sunset", "tango",
    "teapot", "tiger", "tomato", "tractor", "trumpet", "tulip", "tunnel", "turtle", "umbrella",
)
