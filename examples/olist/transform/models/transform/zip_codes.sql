-- Every zip code prefix any customer, seller or geolocation point uses.
select distinct zip_code_prefix
from (
    select customer_zip_code_prefix as zip_code_prefix from {{ source('raw', 'olist_customers') }}
    union
    select seller_zip_code_prefix from {{ source('raw', 'olist_sellers') }}
    union
    select zip_code_prefix from {{ ref('geolocation') }}
) prefixes
where zip_code_prefix is not null
