-- One row per zip code prefix. The raw table has many points per prefix and no
-- key (joining it on the prefix is what multiplies rows); in second normal form
-- the prefix is the key, with the centre of its points and how many there are.
-- The city names of the points vary within a prefix (accents, spellings), so the
-- city belongs to customers and sellers, not here.
select
    geolocation_zip_code_prefix as zip_code_prefix,
    avg(geolocation_lat) as lat,
    avg(geolocation_lng) as lng,
    count(*) as points
from {{ source('raw', 'olist_geolocation') }}
where geolocation_zip_code_prefix is not null
group by geolocation_zip_code_prefix
