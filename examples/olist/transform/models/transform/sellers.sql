select
    seller_id,
    seller_zip_code_prefix as zip_code_prefix,
    md5(seller_city || '|' || seller_state) as city_id
from {{ source('raw', 'olist_sellers') }}
