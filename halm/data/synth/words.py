"""Word lists for the sentence generator of `halm synth speech` (written for halm; public domain).

Base forms only; plurals, past tenses and third-person forms are derived by `inflect_*` in
speech.py with the irregular forms listed here. With the derived forms the vocabulary has a few
thousand distinct words.
"""

NOUNS = """
apple arm army baby bag ball band bank basket bath beach bean bear bed bee bell belt bench bicycle
bird blanket boat body bone book boot bottle bowl box boy branch bread brick bridge brother brush
bucket building bus butter button cabin cake camera camp candle cap car card carpet cart castle cat
chain chair cheese cherry chicken child church circle city clock cloud coat coin collar computer
cook corner cottage cow crowd cup curtain cushion desk dinner doctor dog doll door dragon drawer
dress drum duck eagle egg elephant engine eye face factory farm farmer feather fence field finger
fire fish flag flower fly forest fork fountain fox frog fruit garden gate ghost gift girl glass
glove goat gold grape grass guitar hammer hand hat head heart hill horse hospital house island
jacket jar jewel judge kettle key king kitchen kite knee knife ladder lake lamp leaf leg lemon letter
library light lion lock machine map market mirror monkey moon morning mountain mouse mouth museum
nail neck needle nest net night nose nurse ocean office onion orange owl page painter palace pan
paper parcel park parrot party pen pencil piano picture pie pig pillow pilot pipe pocket poet pond
potato prince princess pump queen rabbit radio rail rain ring river road robot rock roof room root
rope rose sailor salt sand school scissors sea seed sheep shelf shell ship shirt shoe shop singer
sister skirt sky snake snow sock soldier song soup spoon square stamp star station stick stone
store storm story street string sugar sun table tail teacher tent thread throat ticket tiger toe
tomato tongue tool tooth towel tower town toy train tray tree truck tunnel umbrella valley vase
village violin wagon wall watch water wave wheel whistle window wing winter wire wolf woman worm
writer yard zebra anchor apron attic badge balloon barn barrel basin beard beetle berry blade
bridle bucket buckle cabbage canal candle canoe carrot ceiling cellar chimney cliff closet compass
cradle crown daisy desert diamond dinosaur dolphin donkey envelope falcon ferry flute fossil
goose hammock harbor harp helmet hen honey hook horn hut igloo insect ivy jungle kangaroo kitten
lantern lever lighthouse lizard lobster magnet marble meadow melon mitten moth mule napkin needle
oak oar orchard otter oven paddle parade peach pearl pebble pepper pigeon pine plum pony puddle
puppet quilt raft raven ribbon rocket saddle scarf shadow shovel sled slipper snail spider sponge
squirrel statue stove swan sword teapot thimble thistle thumb tractor trumpet tulip turtle
walnut wardrobe whale wheat windmill wreath yacht ant bay bolt cave clay coal deer dust flame fog
frost gem gull hawk hay ink jam lace loaf mast mill moss mud oil paint path peak plank quill reed
reef rug sail seal shed silk smoke soap steam straw thorn tide twig vine wax weed wood wool
acorn album alley apricot arrow atlas avenue axe bagel bakery ballad bandage banner barrel bat
battery beacon biscuit blossom blueprint bonnet bouquet bracelet brook bubble budget buffalo bulb
bundle cactus calendar camel canvas captain carnival carriage cathedral cedar chalk channel chapel
chariot chess chestnut clover cobweb comet cookie copper coral cotton cricket crystal cupboard
dagger dentist diary dime dock dome dough dove drawing elbow emerald fabric fiddle fig flask
flock forehead frame furnace galaxy garlic gazelle glacier globe gravel gutter hairbrush hallway
hamster handle harvest hedge heron hive holiday hornet iceberg icicle journal kernel kettle
kingdom ladle lagoon lamb lemonade lettuce lily locket lullaby mango mansion maple mattress
medal melody meteor microscope minnow mitten monument mosaic mushroom necklace novel oyster
pancake panther parchment pasture pavement peacock pedal pelican pendulum penguin pepper piglet
pilgrim pinecone pirate planet platform plumber poppy porch postcard pottery pretzel pudding
puzzle pyramid quarry rainbow raisin rattle recipe reindeer riddle saucer scooter seagull sketch
skyscraper slipper sparrow spinach stadium starfish suitcase sunflower sweater tadpole tambourine
telescope thermos toaster tortoise treasure trolley trophy trunk tuba turnip typewriter unicorn
vessel volcano waffle walrus warehouse waterfall weasel wheelbarrow whisker willow woodpecker
"""

PLURAL_IRREGULAR = """
child:children foot:feet goose:geese knife:knives leaf:leaves loaf:loaves man:men mouse:mice
person:people sheep:sheep shelf:shelves tooth:teeth wife:wives wolf:wolves woman:women deer:deer
scissors:scissors fish:fish potato:potatoes tomato:tomatoes hero:heroes
"""

ADJECTIVES = """
able ancient angry bare beautiful big bitter black blue bold brave bright brief broad broken brown
busy calm careful cheap cheerful clean clear clever cold comfortable common cool crooked curious
damp dark dear deep delicate dirty distant dry dull dusty eager early easy elegant empty enormous
faint fair famous fancy fast fierce fine flat fresh friendly full funny gentle giant glad gloomy
golden good graceful grand gray great green grumpy happy hard heavy helpful hidden high hollow
honest huge humble hungry icy important jolly kind large late lazy light little lively lonely long
loud lovely low lucky magic messy mighty modern narrow nasty neat nervous new nice noisy odd old
open orange ordinary pale patient peaceful pink plain pleasant polite poor pretty proud purple
quick quiet rapid rare red rich rough round royal rude rusty sad safe salty scary sharp shiny short
shy silent silly silver simple slim slow small smooth soft sour spare special splendid square
steep sticky stiff strange strict strong sturdy sudden sweet swift tall tame tender thick thin
tidy tiny tired tough tremendous ugly useful vast violet warm weak wealthy wet white whole wide
wild wise wooden worried yellow young zealous bumpy chilly crisp dizzy fluffy fuzzy greasy hasty
juicy muddy nimble rosy rusty shabby sleepy snowy soggy sunny swampy velvet wobbly woolly
absent amber ample awkward blank bouncy breezy bulky chubby clumsy cozy creamy crunchy cunning
dainty dim dreary drowsy earnest fearless feeble fragile frosty gigantic gleaming glossy gritty
hairy handsome hearty hefty hilly idle jagged keen lanky lean loyal lumpy majestic mellow merry
mild misty mossy nifty nutty plump prickly puny quaint radiant ragged rowdy rugged rustic scruffy
sensible serene shaggy sleek slender sly snug sparkling spotless stormy sunny tangy tart thrifty
"""

# transitive verbs as base:past (regular ones get -ed by rule when no past is given)
VERBS_TRANSITIVE = """
answer bake borrow build:built buy:bought call carry catch:caught chase clean climb close collect
cook count cover cut:cut draw:drew drop eat:ate fill find:found fix fold follow forget:forgot
grab guard hang:hung help hide:hid hold:held hug hunt kick kiss knock lift like lock love mend
miss move need open order paint pass pick plant play pour pull push reach read:read remember
repair save see:saw sell:sold send:sent shake:shook share show sing:sang smell sort steal:stole
stir study take:took teach:taught tell:told throw:threw touch visit wash watch wear:wore weigh
wrap write:wrote bring:brought feed:fed keep:kept leave:left lose:lost meet:met ride:rode ring:rang
sew shut:shut sweep:swept test trade warn wind:wound admire bury chop crack dig:dug dust explore
greet guide heat iron juggle kneel:knelt measure nibble pack polish rescue scrub select spill stack
tickle toss tug unlock weave:wove whistle wipe
admire arrange attach balance bend:bent bite:bit blow:blew boil brew brush check chew clip comb
copy cure decorate deliver dip drag dry erase examine fetch flip frame freeze:froze glue grind:ground
harvest hatch inspect invite kick knit label lend:lent load mail mix notice peel pinch plug
prepare print promise protect punch rake rinse roll rub scatter scratch slice spray squeeze stamp
stretch swap tie trim twist untie water weed whisk
"""

VERBS_INTRANSITIVE = """
arrive bark blink bounce breathe cough cry dance dive:dove drift float fly:flew glow grin grow:grew
hop hurry jump kneel:knelt laugh lean listen march nap pause rest return run:ran rush shiver
shout sigh sing:sang sit:sat skip sleep:slept smile sneeze speak:spoke spin:spun stand:stood stay
stumble swim:swam travel tremble wait wake:woke walk wander whisper wiggle wink work yawn yell
"""

ADVERBS = """
quickly slowly quietly loudly carefully happily sadly gently suddenly softly bravely calmly
eagerly easily finally gladly honestly kindly lazily nervously politely proudly rapidly rarely
safely silently smoothly sometimes soon swiftly today tomorrow warmly wisely yesterday always
never often again already almost together alone early late outside inside upstairs downstairs
nearby everywhere somewhere patiently cheerfully boldly briskly faintly gracefully hastily
"""

NAMES = """
Adam Alice Amelia Anna Arthur Beatrice Benjamin Charles Charlotte Clara Daniel David Edward Eleanor
Elizabeth Emily Emma Frank George Grace Hannah Harry Helen Henry Isabel Jack Jacob James Jane John
Joseph Julia Kate Laura Leo Lily Lucy Margaret Martha Mary Matthew Michael Molly Nathan Oliver
Oscar Paul Peter Philip Rachel Robert Rose Ruth Samuel Sarah Sophie Thomas Victor William Walter
Agnes Albert Bernard Cecilia Dorothy Ernest Florence Gilbert Harriet Irene Lionel Mabel Norman
"""

PLACES = """
London Paris Boston Dublin Madrid Vienna Rome Berlin Oslo Lisbon Prague Chicago Denver Sydney
Toronto Geneva Naples Venice Florence Bristol Glasgow Cairo Athens Warsaw Munich Seattle Austin
Quebec Brighton Oxford Cambridge Edinburgh Cardiff York Bath Kyoto Lima Santiago Havana
"""

PREPOSITIONS = "near under behind beside above below inside across along around beyond toward past over through"

TIMES = """
this morning|last night|at noon|before dinner|after lunch|on Monday|on Tuesday|on Wednesday|on Thursday|
on Friday|on Saturday|on Sunday|in the spring|in the summer|in the autumn|in the winter|every evening|
at dawn|at midnight|next week|last year|in the afternoon|during the storm|after the party|at sunset
"""

NUMBERS = "two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty hundred"
